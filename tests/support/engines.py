"""An engine on stand-ins, for tests of what it does with jobs: real records (Redis), fake messages, media and
pipelines, so a test decides where things go wrong."""

import threading
from collections.abc import Callable
from typing import Any

from pipeq.config.settings import Settings
from pipeq.core.contract import Job
from pipeq.core.records import RecordStore
from pipeq.worker.engine import Delivery, Engine
from tests.support.waiting import wait_until


class Messages:
    """Broker messages as a test sees them: how often each job's was acked or requeued, and by which touch."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.requeued: list[str] = []
        self._lock = threading.Lock()

    def delivery(self, job: Job, touch: Callable[[list[Any]], Any] | None = None, tag: Any = None) -> Delivery:
        def ack() -> None:
            with self._lock:
                self.acked.append(job.id)

        def requeue() -> None:
            with self._lock:
                self.requeued.append(job.id)

        return Delivery(job, ack, requeue, touch, tag)

    def settled(self) -> int:
        with self._lock:
            return len(self.acked) + len(self.requeued)


class TextFetcher:
    """Hands each job's text over as fetched media."""

    def fetch_many(self, inputs: list[Any], access: Any = None) -> list[Any]:
        return [item.text for item in inputs]


class OnePipeline:
    """A pipeline cache holding ``pipe`` for every model (or raising ``error`` when asked for one)."""

    def __init__(self, pipe: Any = None, error: Exception | None = None) -> None:
        self.pipe, self.error = pipe, error

    def get(self, entry: Any) -> Any:
        if self.error is not None:
            raise self.error
        return self.pipe


class Labeller:
    """A text-classification pipeline stand-in: labels each text by its length; ``on_call(texts)`` runs first
    (to raise, or to block)."""

    tokenizer = None
    device = "cpu"

    def __init__(self, on_call: Callable[[list[str]], None] = lambda texts: None) -> None:
        self.on_call = on_call
        self.calls: list[list[str]] = []

    def __call__(self, inputs: list[str] | str, **params: Any) -> Any:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        self.calls.append(texts)
        self.on_call(texts)
        outputs = [{"label": f"LEN{len(text)}", "score": 1.0} for text in texts]
        return outputs[:1] if isinstance(inputs, str) else outputs  # as text-classification's pipeline does


def engine_on(
    settings: Settings,
    store: RecordStore,
    pipelines: Any,
    fetcher: Any = None,
    results: Any = None,
    end_process: Callable[[int], None] | None = None,
    start: bool = True,
) -> Engine:
    """An engine on these stand-ins, started unless ``start`` is False; stop it when done."""
    engine = Engine(settings, store, fetcher or TextFetcher(), pipelines, worker_name="test@engine", results=results)
    if start:
        engine.start(end_process=end_process) if end_process else engine.start()
    return engine


def run_through(
    engine: Engine, messages: Messages, jobs: list[Job], timeout: float = 60, then: Callable[[], None] = lambda: None
) -> None:
    """Submit ``jobs``, call ``then`` (e.g. to start the engine: the jobs then share a micro-batch), and wait until
    each of their messages is settled (acked or requeued)."""
    done = messages.settled() + len(jobs)
    for job in jobs:
        engine.submit(messages.delivery(job))
    then()
    wait_until(
        lambda: messages.settled() >= done,
        timeout,
        message=f"{done - messages.settled()} of {len(jobs)} message(s) never settled in {timeout} s",
    )
