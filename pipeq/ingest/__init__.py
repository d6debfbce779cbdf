"""Event-driven ingestion: objects landing in a bucket become jobs, by the config's ``[[ingest]]`` rules."""
