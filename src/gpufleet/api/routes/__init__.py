"""Routes: translate HTTP to a service call and back; nothing else."""
