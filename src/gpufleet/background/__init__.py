"""Periodic work beside request handling: each task is a ``run_once()`` plus the generic loop."""
