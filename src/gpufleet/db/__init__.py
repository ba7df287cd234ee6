"""Database access: the embedded server, connection pools, tenant transactions and migrations."""
