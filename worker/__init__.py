"""The pipeq worker: a plain Celery app whose jobs run on transformers pipelines in micro-batches."""
