"""The gpufleet command line."""
