"""Pure GPU allocator: the model, the indexed cluster state, placement policies."""
