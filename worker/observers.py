"""What the engine tells those who watch it (metrics, Celery task events), and how it tells them safely.

The engine calls its observer at each stage of a job's life. An observer must be quick (the engine calls it on
its own threads, between jobs); one that raises is logged and the job goes on: watching never fails a job.
"""

import logging
from collections.abc import Sequence

from pipeq.config.catalogue import ModelEntry
from pipeq.core.contract import Job
from pipeq.core.records import JobRecord

log = logging.getLogger(__name__)


class EngineObserver:
    """The stages an engine reports; each a no-op here. Subclasses override what they watch."""

    def received(self, job: Job) -> None:
        """A job's message reached the engine."""

    def started(self, entry: ModelEntry, records: Sequence[JobRecord]) -> None:
        """These jobs' attempts started (their ``running`` records are written)."""

    def finished(self, records: Sequence[JobRecord]) -> None:
        """These jobs' final records are written (succeeded or failed), before their messages are acked."""

    def micro_batch(self, entry: ModelEntry, jobs: int, calls: int) -> None:
        """A micro-batch of ``jobs`` jobs went through the model in ``calls`` pipeline calls."""

    def pipeline_call(self, entry: ModelEntry, inputs: int, seconds: float) -> None:
        """One pipeline call on ``inputs`` inputs took ``seconds``."""

    def model_loaded(self, entry: ModelEntry, seconds: float, ok: bool) -> None:
        """Loading ``entry``'s pipeline took ``seconds`` and worked (or not)."""

    def media_fetched(self, size: int, seconds: float, ok: bool) -> None:
        """Fetching one object of ``size`` bytes took ``seconds`` and worked (or not)."""

    def redelivered(self, records: Sequence[JobRecord]) -> None:
        """Jobs delivered again whose records (these) were already final: acked without running again."""

    def draining(self) -> None:
        """The engine stopped taking micro-batches: it drains before the worker exits."""

    def close(self) -> None:
        """The engine has stopped: finish what is pending (within a few seconds) and let go of resources."""


class Observers(EngineObserver):
    """Several observers as one; each call reaches every one of them, whatever the others raise."""

    def __init__(self, observers: Sequence[EngineObserver]) -> None:
        self.observers = list(observers)

    def _each(self, stage: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, stage)(*args)
            except Exception:
                log.exception("observer %s failed on %s; the job goes on", type(observer).__name__, stage)

    def received(self, job: Job) -> None:
        self._each("received", job)

    def started(self, entry: ModelEntry, records: Sequence[JobRecord]) -> None:
        self._each("started", entry, records)

    def finished(self, records: Sequence[JobRecord]) -> None:
        self._each("finished", records)

    def micro_batch(self, entry: ModelEntry, jobs: int, calls: int) -> None:
        self._each("micro_batch", entry, jobs, calls)

    def pipeline_call(self, entry: ModelEntry, inputs: int, seconds: float) -> None:
        self._each("pipeline_call", entry, inputs, seconds)

    def model_loaded(self, entry: ModelEntry, seconds: float, ok: bool) -> None:
        self._each("model_loaded", entry, seconds, ok)

    def media_fetched(self, size: int, seconds: float, ok: bool) -> None:
        self._each("media_fetched", size, seconds, ok)

    def redelivered(self, records: Sequence[JobRecord]) -> None:
        self._each("redelivered", records)

    def draining(self) -> None:
        self._each("draining")

    def close(self) -> None:
        self._each("close")
