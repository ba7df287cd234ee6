"""Wire schemas, defined once and shared by the server, the SDK and the CLI (no FastAPI here)."""
