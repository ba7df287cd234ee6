"""Every SQL statement of gpufleet, one module per aggregate.

Functions take the connection first and the tenant as a required keyword, return domain
objects (never raw rows) and never commit: the service owns the transaction. The tenant is
always part of the WHERE clause as well, on top of row-level security (defense in depth).
"""
