"""The HTTP API: create_app(settings), one error mapping, schemas and routes."""
