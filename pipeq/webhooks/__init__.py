"""Webhooks: Standard Webhooks signing (``signing``), the body (``payload``), one SSRF-safe POST (``http``), the
delivery task with retries (``delivery``), dead letters (``dead_letters``) and ``pipeq webhooks`` (``cli``)."""
