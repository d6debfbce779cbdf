"""A model worker's Prometheus metrics (:mod:`pipeq.ops.metrics`), fed by its engine's observer calls."""

from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime

from pipeq.config.catalogue import Catalogue, ModelEntry
from pipeq.core.records import JobRecord
from pipeq.ops import metrics
from pipeq.worker.observers import EngineObserver


class WorkerMetrics(EngineObserver):
    """Counts and times what one engine does, labelled with its ``device`` (what the worker was pinned to).

    ``loaded`` returns the models the engine holds and their bytes; ``held`` how many jobs it holds unacked;
    ``accelerator_memory`` the (allocated, reserved) bytes of its accelerator, None on CPU. The last two are read
    when Prometheus scrapes.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        device: str,
        loaded: Callable[[], dict[str, int]],
        held: Callable[[], int],
        accelerator_memory: Callable[[], tuple[int, int] | None] = lambda: None,
    ) -> None:
        self.catalogue = catalogue
        self.device = device
        self._loaded = loaded
        metrics.jobs_held.labels(device).set_function(held)
        metrics.draining.labels(device).set(0)
        if accelerator_memory() is not None:
            metrics.accelerator_memory_allocated.labels(device).set_function(lambda: accelerator_memory()[0])
            metrics.accelerator_memory_reserved.labels(device).set_function(lambda: accelerator_memory()[1])

    def _labels(self, entry: ModelEntry) -> tuple[str, str, str]:
        return entry.name, entry.queue, self.device

    def finished(self, records: Sequence[JobRecord]) -> None:
        for record in records:
            entry = self.catalogue.models.get(record.model)
            if entry is None:  # a job refused before its model was known: no label to give it
                continue
            labels = self._labels(entry)
            metrics.jobs_finished.labels(*labels, record.state).inc()
            finished = record.finished_at
            if finished is None:
                continue
            metrics.job_latency.labels(*labels).observe(_seconds(record.submitted_at, finished))
            if record.started_at is not None:
                metrics.job_queue_wait.labels(*labels).observe(_seconds(record.submitted_at, record.started_at))
                metrics.job_run.labels(*labels).observe(_seconds(record.started_at, finished))

    def micro_batch(self, entry: ModelEntry, jobs: int, calls: int) -> None:
        labels = self._labels(entry)
        metrics.micro_batch_jobs.labels(*labels).observe(jobs)
        metrics.micro_batch_calls.labels(*labels).observe(calls)

    def pipeline_call(self, entry: ModelEntry, inputs: int, seconds: float) -> None:
        labels = self._labels(entry)
        metrics.pipeline_call.labels(*labels).observe(seconds)
        metrics.pipeline_call_inputs.labels(*labels).observe(inputs)

    def model_loaded(self, entry: ModelEntry, seconds: float, ok: bool) -> None:
        metrics.model_load.labels(entry.name, self.device, "loaded" if ok else "failed").observe(seconds)
        self._refresh_loaded()

    def media_fetched(self, size: int, seconds: float, ok: bool) -> None:
        metrics.media_fetch.labels(self.device, "ok" if ok else "failed").observe(seconds)
        if ok:
            metrics.media_fetch_bytes.labels(self.device).inc(size)
            metrics.media_fetch_size.labels(self.device).observe(size)

    def draining(self) -> None:
        """The worker stopped taking jobs and drains."""
        metrics.draining.labels(self.device).set(1)

    def _refresh_loaded(self) -> None:
        """The loaded-model gauges, after a load (which may have evicted others)."""
        loaded = self._loaded()
        metrics.loaded_models.labels(self.device).set(len(loaded))
        for name in self.catalogue.models:
            if name in loaded:
                metrics.loaded_model_bytes.labels(name, self.device).set(loaded[name])
            else:
                with suppress(KeyError):  # not loaded before either
                    metrics.loaded_model_bytes.remove(name, self.device)


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def cuda_memory(device: str) -> Callable[[], tuple[int, int] | None]:
    """How to read ``device``'s (allocated, reserved) bytes: torch's CUDA allocator; None off CUDA."""

    def read() -> tuple[int, int] | None:
        if not device.startswith("cuda"):
            return None
        import torch

        if not torch.cuda.is_available():
            return None
        return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)

    return read
