"""Use cases. Each owns its transaction and calls repo/ and states.py; nothing here speaks HTTP."""
