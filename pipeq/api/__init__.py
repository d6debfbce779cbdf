"""pipeq's HTTP API (``pipeq api``): jobs, models and uploads over HTTP for producers in any language, with scoped
tokens and a job console."""
