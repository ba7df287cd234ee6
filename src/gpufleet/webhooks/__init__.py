"""Webhooks: Standard Webhooks signing, the SSRF guard, the retry schedule and the HTTP sender."""
