"""Inference: Cog models (archives, schema derivation, input validation) and predictions."""
