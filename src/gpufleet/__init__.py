"""gpufleet: a self-hosted, multi-tenant GPU fleet manager on PostgreSQL."""

__version__ = "0.1.0"
