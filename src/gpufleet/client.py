"""The SDK lives in ``gpufleet.sdk``; this name stays for code written against it before."""

from gpufleet.sdk import ApiError, Client

__all__ = ["ApiError", "Client"]
