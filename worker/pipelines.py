"""Loading catalogue models as transformers pipelines, once each, and keeping them warm."""

import gc
import logging
import threading
from typing import Any

from config.catalogue import ModelEntry
from worker.errors import ModelUnavailable

log = logging.getLogger(__name__)


def load_pipeline(entry: ModelEntry, device: str) -> Any:
    """``transformers.pipeline`` for a catalogue entry on ``device`` (Hub id or local path, pinned revision)."""
    import torch
    import transformers

    dtype: Any = entry.dtype if entry.dtype == "auto" else getattr(torch, entry.dtype)
    log.info("loading %s (%s, %s) on %s", entry.name, entry.id, entry.task, device)
    try:
        return transformers.pipeline(
            entry.task,
            model=entry.id,
            revision=entry.revision,
            device=device,
            dtype=dtype,
            trust_remote_code=entry.trust_remote_code,
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelUnavailable(f"model {entry.name} ({entry.id}) could not be loaded: {exc}") from None


class PipelineCache:
    """One pipeline per catalogue model, loaded on first use and kept."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._pipelines: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> Any:
        """The pipeline for ``entry``, loading it if needed (ModelUnavailable if it cannot be)."""
        with self._lock:
            pipe = self._pipelines.get(entry.name)
            if pipe is None:
                pipe = self._pipelines[entry.name] = load_pipeline(entry, self.device)
                # A model brings millions of long-lived objects; leave them out of every future garbage
                # collection, whose full passes would otherwise stall the batches that trigger them.
                gc.collect()
                gc.freeze()
            return pipe
