"""pipeq: event-driven inference for Hugging Face pipelines.

One import root, in layers that point one way (``tests/test_layers.py`` enforces it)::

    pipeq.config                          settings, the model catalogue, the task table
    pipeq.core                            the job contract, records, results, object storage, Celery wiring
    pipeq.producer  pipeq.worker          submitting jobs; running them on pipelines in micro-batches
    pipeq.webhooks  pipeq.ingest          signed webhook delivery; bucket events to jobs
    pipeq.cli                             the ``pipeq`` command

This module only names the public API, loading it on first use, so ``import pipeq.config`` stays light.
"""

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Client": "pipeq.producer",
    "UnknownJob": "pipeq.producer",
    "JobConflict": "pipeq.producer",
    "InvalidJob": "pipeq.core.contract",
    "JobRecord": "pipeq.core.records",
    "Settings": "pipeq.config",
    "load_settings": "pipeq.config",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeq' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
