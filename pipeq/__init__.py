"""pipeq: event-driven inference for Hugging Face pipelines.

This package holds what producers and workers share: the job contract, the job-record store in Redis, the
Celery wiring and the ``pipeq`` command line.
"""

__version__ = "0.1.0"
