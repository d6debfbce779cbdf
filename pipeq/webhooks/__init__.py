"""Webhooks: Standard Webhooks signing, SSRF-safe delivery over HTTP, retries, dead letters and their CLI."""
