"""The engine: the loop that owns micro-batching inside a worker process.

The Celery consumer hands each received job to :meth:`Engine.submit`. Two threads do the rest:

* *prepare*: takes the next ready micro-batch and prepares it in three stages: *claim* (mark its jobs running;
  settle redeliveries of jobs already final), *load* (the model's pipeline, or a failure for every job), *fetch
  and decode* (media fetched in parallel, decoded into pipeline inputs);
* *model*: runs the prepared batch through the pipeline (:mod:`pipeq.worker.runner`), writes every job's
  record, then acks the messages.

A third thread, *keep-alive*, touches every message the engine holds (waiting, prepared or running) four times
per visibility timeout, so the broker never redelivers a job that is merely slow or waiting its turn.

The prepare thread works on batch N+1 while the model thread runs batch N. Jobs wait for company (up to
their model's ``max_wait_s``) only while the model is busy: an idle model takes whatever is waiting.

A message is acked only after its job's final record is stored, so a worker killed at any point loses
nothing: the broker redelivers.
"""

import json
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any

from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import Limits, Settings
from pipeq.config.tasks import TaskSpec, task_spec
from pipeq.worker.batcher import MicroBatcher
from pipeq.worker.decoding import Decoded, decode
from pipeq.worker.errors import JobFailure
from pipeq.worker.media import Fetched, MediaFetcher, release
from pipeq.worker.memory import pipeline_device_type
from pipeq.worker.pipelines import PipelineCache
from pipeq.worker.runner import run_group

from pipeq.core.contract import Job
from pipeq.core.records import JobError, JobRecord, RecordStore, now
from pipeq.core.results import ResultStorage

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """A received job and how to settle its message."""

    job: Job
    ack: Callable[[], None]
    requeue: Callable[[], None]
    touch: Callable[[list[Any]], Any] | None = None
    """``touch(tags)`` tells the broker these messages are still being worked on (restarts their visibility
    timeout); None off pipeq's transport. Deliveries sharing it are touched in one call."""
    tag: Any = None
    """The message's delivery tag, what ``touch`` takes."""


@dataclass
class PreparedBatch:
    """A micro-batch ready for the model: one group of same-model, same-parameter jobs."""

    entry: ModelEntry
    parameters: dict
    deliveries: list[Delivery]
    records: list[JobRecord]
    inputs: list[Decoded | JobFailure] = field(default_factory=list)
    pipe: Any = None


def group_key(job: Job) -> tuple[str, str]:
    """Jobs batch together when they share model (hence task) and parameters."""
    return job.model, json.dumps(job.parameters, sort_keys=True)


def _decoded_or_failure(
    spec: TaskSpec, raw: Fetched | JobFailure, limits: Limits, rate: int | None
) -> Decoded | JobFailure:
    """The pipeline input for a fetched value, or the failure that stands in for it."""
    if isinstance(raw, JobFailure):
        return raw
    try:
        return decode(spec, raw, limits, rate)
    except JobFailure as failure:
        return failure


class Engine:
    """Micro-batches jobs across messages and runs them; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: RecordStore,
        fetcher: MediaFetcher,
        pipelines: PipelineCache,
        worker_name: str = "pipeq",
        results: ResultStorage | None = None,
        on_final: Callable[[list[Job]], None] = lambda jobs: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.fetcher = fetcher
        self.pipelines = pipelines
        self.results = results
        self.on_final = on_final
        """Called with the finished jobs that asked for a webhook, before their messages are acked."""
        self.worker_name = worker_name
        self.batcher: MicroBatcher[Delivery] = MicroBatcher(self._limits)
        self._prepared: SimpleQueue[PreparedBatch | None] = SimpleQueue()
        self._slot = threading.Semaphore(1)
        self._stopping = threading.Event()
        self._model_idle = threading.Event()
        self._threads: list[threading.Thread] = []
        self._held: dict[int, Delivery] = {}  # id -> every delivery not yet acked or requeued
        self._held_lock = threading.Lock()

    # -- the consumer side -------------------------------------------------------------------------------

    def submit(self, delivery: Delivery) -> None:
        """Queue a received job for its micro-batch."""
        with self._held_lock:
            self._held[id(delivery)] = delivery
        self.batcher.put(group_key(delivery.job), delivery)

    def touch_held(self) -> None:
        """Touch every delivery not yet settled, so none reaches the broker's visibility timeout."""
        with self._held_lock:
            held = list(self._held.values())
        tags_by_touch: dict[Callable[[list[Any]], Any], list[Any]] = {}
        for delivery in held:
            if delivery.touch is not None:
                tags_by_touch.setdefault(delivery.touch, []).append(delivery.tag)
        failed = 0
        for touch, tags in tags_by_touch.items():  # one round trip per broker channel
            try:
                touch(tags)
            except Exception:
                failed += len(tags)
        if failed:
            log.warning("could not extend the visibility of %d of %d held job(s)", failed, len(held))

    def start(self) -> None:
        """Start the prepare, model and keep-alive threads (idempotent)."""
        if self._threads:
            return
        self._stopping.clear()
        loops = (
            (self._prepare_loop, "pipeq-prepare"),
            (self._model_loop, "pipeq-model"),
            (self._keepalive_loop, "pipeq-keepalive"),
        )
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand and stop; jobs still waiting stay unacked, so the broker redelivers them."""
        self._stopping.set()
        self._requeue(self.batcher.close())
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    # -- the loops ----------------------------------------------------------------------------------------

    def _limits(self, key: Hashable) -> tuple[int, float]:
        entry = self.settings.catalogue.models[key[0]]
        return entry.max_batch_jobs, entry.max_wait_s

    def _prepare_loop(self) -> None:
        while not self._stopping.is_set():
            self._slot.acquire()
            got = self.batcher.get(timeout=0.5, eager=self._model_idle.is_set)
            if got is None:
                self._slot.release()
                continue
            _, deliveries = got
            try:
                prepared = self.prepare(deliveries)
            except Exception:
                log.exception("preparing a batch of %d job(s) failed; requeueing them", len(deliveries))
                self._requeue(deliveries)
                self._slot.release()
                continue
            self._prepared.put(prepared)
        self._prepared.put(None)

    def _keepalive_loop(self) -> None:
        interval = self.settings.broker_visibility_timeout() / 4
        while not self._stopping.wait(interval):
            self.touch_held()

    def _model_loop(self) -> None:
        while (prepared := self._next_prepared()) is not None:
            self._slot.release()
            try:
                self.run(prepared)
            except Exception:
                log.exception("running a batch of %d job(s) failed; requeueing them", len(prepared.deliveries))
                self._requeue(prepared.deliveries)

    def _next_prepared(self) -> PreparedBatch | None:
        """The next prepared batch; while none is there the model is idle, so waiting jobs need not wait."""
        if self._prepared.empty():
            self._model_idle.set()
            self.batcher.poke()
        prepared = self._prepared.get()
        self._model_idle.clear()
        return prepared

    # -- the stages: prepare (claim, load, fetch and decode), then run ------------------------------------

    def prepare(self, deliveries: list[Delivery]) -> PreparedBatch:
        """Claim the jobs, load their model, fetch and decode their inputs: the batch :meth:`run` takes."""
        batch = self._claim(deliveries)
        if batch.deliveries and self._load(batch):
            self._fetch_and_decode(batch)
        return batch

    def _claim(self, deliveries: list[Delivery]) -> PreparedBatch:
        """The jobs' records written ``running`` (one more attempt each), in a batch of their own. Jobs already
        final are redeliveries of finished work: settled here (their webhooks queued again, in case the first run
        stopped short, then acked) and left out of the batch."""
        jobs = [delivery.job for delivery in deliveries]
        entry = self.settings.catalogue.models[jobs[0].model]
        started = now()
        running: list[JobRecord] = []
        for job, previous in zip(jobs, self.store.get_many([job.id for job in jobs]), strict=True):
            running.append(
                JobRecord(
                    state="running",
                    id=job.id,
                    task=job.task,
                    model=job.model,
                    submitted_at=job.submitted_at,
                    started_at=started,
                    attempts=(previous.attempts if previous else 0) + 1,
                    micro_batch_jobs=len(jobs),
                    worker=self.worker_name,
                    webhook=previous.webhook if previous else None,  # the producer's, not the message's
                )
            )
        written = self.store.write(running)
        fresh = [i for i, ok in enumerate(written) if ok]
        finished = [i for i, ok in enumerate(written) if not ok]
        self.on_final([jobs[i] for i in finished if jobs[i].webhook])
        self._ack([deliveries[i] for i in finished])
        return PreparedBatch(entry, jobs[0].parameters, [deliveries[i] for i in fresh], [running[i] for i in fresh])

    def _load(self, batch: PreparedBatch) -> bool:
        """Put the model's pipeline, from the cache, in the batch; when it cannot load, every job fails saying why
        (and False)."""
        try:
            batch.pipe = self.pipelines.get(batch.entry)
        except JobFailure as failure:
            batch.inputs = [failure] * len(batch.deliveries)
            return False
        return True

    def _fetch_and_decode(self, batch: PreparedBatch) -> None:
        """Fetch the jobs' inputs in parallel and decode them into the batch; a bad input fails its job alone.
        Spooled objects' temporary files are released once decoded."""
        spec = task_spec(batch.entry.task)
        rate = getattr(getattr(batch.pipe, "feature_extractor", None), "sampling_rate", None)
        inputs = [delivery.job.input for delivery in batch.deliveries]
        raws = self.fetcher.fetch_many(inputs, self.settings.object_access(batch.entry))
        try:
            batch.inputs = [_decoded_or_failure(spec, raw, self.settings.limits, rate) for raw in raws]
        finally:
            for raw in raws:
                release(raw)

    def run(self, batch: PreparedBatch) -> None:
        """Run the batch's good inputs through the pipeline, store every job's record, then ack."""
        if not batch.deliveries:
            return
        ok = [i for i, item in enumerate(batch.inputs) if isinstance(item, Decoded)]
        outcomes: list[Any] = list(batch.inputs)
        if ok:
            spec = task_spec(batch.entry.task)
            try:
                batch_size = batch.entry.batch_size_on(pipeline_device_type(batch.pipe))
                results = run_group(batch.pipe, spec, batch.parameters, batch_size, [batch.inputs[i] for i in ok])
            finally:
                for i in ok:
                    batch.inputs[i].release()  # temporary files (videos)
            for i, result in zip(ok, results, strict=True):
                outcomes[i] = result
        finished = now()
        final = []
        for record, outcome in zip(batch.records, outcomes, strict=True):
            if isinstance(outcome, JobFailure):
                error = JobError(type=outcome.type, message=str(outcome))
                final.append(record.model_copy(update={"state": "failed", "error": error, "finished_at": finished}))
            else:
                final.append(
                    record.model_copy(update={"state": "succeeded", "result": outcome, "finished_at": finished})
                )
        if self.results is not None:
            final = [self.results.offload(record) for record in final]
        self.store.write(final)
        self.on_final([delivery.job for delivery in batch.deliveries if delivery.job.webhook])
        self._ack(batch.deliveries)

    # -- settling messages --------------------------------------------------------------------------------

    def _release(self, deliveries: list[Delivery]) -> None:
        """Stop keeping these deliveries alive: they are settled."""
        with self._held_lock:
            for delivery in deliveries:
                self._held.pop(id(delivery), None)

    def _ack(self, deliveries: list[Delivery]) -> None:
        self._release(deliveries)
        for delivery in deliveries:
            delivery.ack()

    def _requeue(self, deliveries: list[Delivery]) -> None:
        self._release(deliveries)
        for delivery in deliveries:
            try:
                delivery.requeue()
            except Exception:
                log.exception("could not requeue job %s; the broker will redeliver it", delivery.job.id)
