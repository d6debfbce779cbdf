"""Developer tooling, not shipped in the wheel: local services (redis-server, an S3 server), tiny random models in
Hub layout, generated media, and the offline demo."""
