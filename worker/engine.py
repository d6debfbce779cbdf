"""The engine: the loop that owns micro-batching inside a worker process.

The Celery consumer hands each received job to :meth:`Engine.submit`. Two threads do the rest:

* *prepare*: takes the next ready micro-batch and prepares it in three stages: *claim* (mark its jobs running;
  settle redeliveries of jobs already final), *load* (the model's pipeline, or a failure for every job), *fetch
  and decode* (media fetched in parallel, decoded into pipeline inputs);
* *model*: runs the prepared batch through the pipeline (:mod:`pipeq.worker.runner`), writes every job's
  record, then acks the messages.

A third thread, *steering*, reads the records of the running call's jobs four times a second: a call whose jobs
are all canceled stops at its next piece (:mod:`pipeq.worker.pieces`), and the progress of a call that works in
pieces is written to its jobs' records (at most twice a second) and told to the webhooks that asked (at most every
PROGRESS_EVENT_S). Jobs canceled or past their deadline before they start never run: claiming skips them (an
expired job is recorded so), and the model thread drops those canceled since their batch was prepared.

A fourth thread, *keep-alive*, touches every message the engine holds (waiting, prepared or running) four times
per visibility timeout, so the broker never redelivers a job that is merely slow or waiting its turn; the jobs of
a call past its run time limit are no longer touched. A fifth, the *watchdog* (:mod:`pipeq.worker.watchdog`),
ends the process when a call cannot be stopped, once :meth:`Engine.end_overdue_call` has settled what it holds.

The prepare thread works on batch N+1 while the model thread runs batch N. Jobs wait for company (up to
their model's ``max_wait_s``) only while the model is busy: an idle model takes whatever is waiting.

Every stage is reported to the engine's observer (:mod:`pipeq.worker.observers`: Prometheus metrics, Celery task
events). :meth:`Engine.stop` is the drain: no more micro-batches start, what waits or is prepared goes back to the
queue with its attempt unused, and the micro-batch in hand finishes, within the drain timeout.

A message is acked only after its job's final record is stored, so a worker killed at any point loses
nothing: the broker redelivers. A job fails once and is never retried for what it brings: any unexpected error
while preparing or running it fails it (and only the jobs it concerns), and a job started ``max_attempts`` times
(a worker killed while running it counts) fails instead of running again. Only infrastructure trouble (Redis or
object storage unreachable) requeues, bounded by the attempts.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Hashable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from queue import SimpleQueue
from typing import Any

from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import Limits, Settings
from pipeq.config.tasks import TaskSpec, task_spec
from pipeq.core.contract import PRIORITIES, Job
from pipeq.core.messaging import keepalive_interval_s
from pipeq.core.records import FINAL_STATES, JobError, JobRecord, Progress, RecordStore, now
from pipeq.core.replication import replica_wait
from pipeq.core.results import ResultStorage
from pipeq.core.webhook_events import wants
from pipeq.webhooks.payload import encode
from pipeq.worker.batcher import MicroBatcher
from pipeq.worker.deadlines import CallDeadlines, CallWatch, RunningCall, limit_generation, timeout_failure
from pipeq.worker.decoding import Decoded, decode, resident_bytes
from pipeq.worker.errors import Canceled, InternalError, JobFailure, ModelUnavailable, TooManyAttempts
from pipeq.worker.infrastructure import ResultsNotStored, is_transient
from pipeq.worker.media import Fetched, MediaFetcher, release
from pipeq.worker.memory import pipeline_device_type
from pipeq.worker.observers import EngineObserver
from pipeq.worker.pieces import watch_pieces
from pipeq.worker.pipelines import PipelineCache
from pipeq.worker.runner import run_group
from pipeq.worker.watchdog import Watchdog

log = logging.getLogger(__name__)

TRANSIENT_BACKOFF_S = 1.0
"""How long the prepare thread pauses after requeueing a batch because Redis or object storage was unreachable."""
SETTLING_S = 10.0
"""How long a worker about to be ended waits for the broker to take its acks and requeues."""
STEER_S = 0.25
"""How often the steering thread reads the records of the running call's jobs (cancels, progress)."""
PROGRESS_WRITE_S = 0.5
"""Least time between two progress writes of a job's record."""
PROGRESS_EVENT_S = 2.0
"""Least time between two progress webhook events of a job."""
Event = tuple[str, str, bytes | None]
"""A webhook event to queue: job id, event (started, progress, completed), its body (None: built when sent)."""


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
    record: JobRecord | None = None
    """The job's ``running`` record once claimed (what a failure or a requeue starts from)."""
    settled: Callable[[], bool] | None = None
    """Whether the broker has taken the ack or requeue: Celery carries them out on its own thread, soon after."""

    def adopt(self, newer: "Delivery") -> None:
        """Settle and keep alive ``newer``'s message instead of this one's: a second message of the same job, the
        one the broker now holds for it (it restored the first when the worker's connection was lost). The first,
        if the broker still has it after all, comes back once untouched and is acked as a finished job's."""
        self.ack, self.requeue, self.touch, self.tag, self.settled = (
            newer.ack,
            newer.requeue,
            newer.touch,
            newer.tag,
            newer.settled,
        )


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
    except Exception as exc:
        return InternalError(f"decoding the input raised {type(exc).__name__}: {exc}{REPORT}")


REPORT = "; this is a bug in pipeq or a library: please report it with the job's input"
"""The end of an InternalError's message."""


def failed_record(record: JobRecord, failure: JobFailure, finished: datetime) -> JobRecord:
    """``record`` (a job's running record) made final: failed with ``failure``."""
    error = JobError(type=failure.type, message=str(failure))
    return record.model_copy(update={"state": "failed", "error": error, "finished_at": finished})


def too_many_attempts(previous: JobRecord, max_attempts: int) -> TooManyAttempts:
    return TooManyAttempts(
        f"the job was started {previous.attempts} times, the most allowed (max_attempts = {max_attempts} in the "
        f"settings), and never finished: its last attempt, on worker {previous.worker or 'unknown'}, ended without a "
        "result (that worker stopped or was killed while running it, or lost Redis or object storage before it"
        " could store one). It is not run again: see that worker's log, "
        "and resubmit the job under a new id once the cause is fixed"
    )


PRODUCER_FIELDS = ("webhook", "webhook_events", "deadline", "result_ttl", "priority", "owner")
"""What a worker copies from a job's stored record into the records it writes: what its producer asked for."""


def _await_broker(deliveries: list[Delivery], deadline: float) -> None:
    """Wait (until ``deadline``) for the broker to take these deliveries' acks and requeues; those it has not taken
    by then are redelivered after the visibility timeout."""
    pending = [delivery for delivery in deliveries if delivery.settled is not None]
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [delivery for delivery in pending if not delivery.settled()]
    if pending:
        log.warning("the broker had not taken %d ack(s) or requeue(s) in time", len(pending))


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
        announce: Callable[[list[Event]], None] = lambda events: None,
        observer: EngineObserver | None = None,
    ) -> None:
        self.settings = settings
        self.replica_wait = replica_wait(settings)  # final records on replicas before acks (submit_replicas)
        self.store = store
        self.fetcher = fetcher
        self.pipelines = pipelines
        self.results = results
        self.announce = announce
        """Queues webhook events: a job's start and progress as they happen, its completion before its message is
        acked; only for jobs whose records ask for them (:mod:`pipeq.core.webhook_events`)."""
        self.observer = observer or EngineObserver()
        """Told of every stage (metrics, task events): :mod:`pipeq.worker.observers`."""
        self.worker_name = worker_name
        self.batcher: MicroBatcher[Delivery] = MicroBatcher(self._limits)
        self._prepared: SimpleQueue[PreparedBatch | None] = SimpleQueue()
        self._slot = threading.Semaphore(1)
        self._stopping = threading.Event()
        self._model_idle = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: list[Delivery] = []  # the micro-batch the model thread runs now
        self._held: dict[str, Delivery] = {}  # job id -> its delivery, until acked or requeued (one per job)
        self._held_lock = threading.Lock()
        self.watch = CallWatch()
        """The pipeline call the model thread is in: what the watchdog and the keep-alive look at."""
        self._watchdog: Watchdog | None = None
        self._stop_consuming: Callable[[], None] = lambda: None

    # -- the consumer side -------------------------------------------------------------------------------

    def submit(self, delivery: Delivery) -> None:
        """Queue a received job for its micro-batch. A message of a job this worker already holds is not claimed
        again (which would spend an attempt on a job that did nothing wrong): the held delivery adopts it."""
        with self._held_lock:
            twin = self._held.get(delivery.job.id)
            if twin is not None:
                twin.adopt(delivery)
                log.info("job %s delivered again while this worker holds it: one run, one attempt", delivery.job.id)
                return
            self._held[delivery.job.id] = delivery
        self.observer.received(delivery.job)
        self.batcher.put(group_key(delivery.job), delivery, priority=PRIORITIES.index(delivery.job.priority))

    def held_count(self) -> int:
        """How many jobs the engine holds unacked: waiting, being prepared, or running."""
        return len(self._held)

    def touch_held(self) -> None:
        """Touch every delivery not yet settled, so none reaches the broker's visibility timeout; except the jobs
        of a call past its run time limit (should the watchdog not end it, the broker redelivers them)."""
        overdue = {id(delivery) for delivery in self.watch.overdue_jobs()}
        with self._held_lock:
            held = [delivery for delivery in self._held.values() if id(delivery) not in overdue]
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

    def start(
        self, end_process: Callable[[int], None] | None = None, stop_consuming: Callable[[], None] = lambda: None
    ) -> None:
        """Start the prepare, model, keep-alive and watchdog threads (idempotent). ``end_process`` (``os._exit``
        where the worker owns its process; then call from the main thread) is how the watchdog ends a process stuck
        in a call; None: it cannot, and only logs. ``stop_consuming`` stops the delivery of messages (returning once
        it has), before the watchdog requeues what the engine holds."""
        if self._threads:
            return
        self._stop_consuming = stop_consuming
        self._watchdog = Watchdog(self.watch, self.end_overdue_call, end_process)
        self._watchdog.start()
        self._stopping.clear()
        loops = (
            (self._prepare_loop, "pipeq-prepare"),
            (self._model_loop, "pipeq-model"),
            (self._keepalive_loop, "pipeq-keepalive"),
            (self._steer_loop, "pipeq-steer"),
        )
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def draining(self) -> bool:
        """Whether the engine is stopping: it starts no more micro-batches."""
        return self._stopping.is_set()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run."""
        return bool(self._threads)

    def alive(self) -> bool:
        """Whether the engine's loops all run (false before :meth:`start` and once stopped)."""
        return self.started and all(thread.is_alive() for thread in self._threads)

    def stop(self, timeout: float = 30.0, while_waiting: Callable[[], None] = lambda: None) -> None:
        """Drain, then stop: take no more batches, give back to the queue what waits or is prepared but not
        started (attempts unused), finish the micro-batch in hand, ack it. ``while_waiting`` is called every
        50 ms meanwhile (to carry out the acks on the consumer's thread). Past ``timeout`` seconds whatever the
        engine still holds is requeued (the running jobs' attempts counted) and it returns all the same."""
        self._stopping.set()
        self.observer.draining()
        self._requeue(self.batcher.close())
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                while_waiting()
                thread.join(0.05)
        if any(thread.is_alive() for thread in self._threads):
            log.warning(
                "the micro-batch in hand did not finish within the drain timeout (%g s): requeueing it", timeout
            )
            running = {id(delivery) for delivery in self._running}
            with self._held_lock:
                held = list(self._held.values())
            self._hand_back([delivery for delivery in held if id(delivery) not in running])
            self._requeue([delivery for delivery in held if id(delivery) in running])  # they started: attempts count
        while_waiting()
        self._threads = []
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        self.observer.close()

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
            except Exception as exc:
                self._settle_after(exc, "preparing", deliveries)
                self._slot.release()
                if is_transient(exc):
                    self._stopping.wait(TRANSIENT_BACKOFF_S)
                continue
            if self._stopping.is_set():  # draining: this batch will not start
                self._hand_back(prepared.deliveries)
                self._slot.release()
                continue
            self._prepared.put(prepared)
        self._prepared.put(None)

    def _keepalive_loop(self) -> None:
        interval = keepalive_interval_s(self.settings)  # jobs untouched for dead_after_s go to other workers
        while not self._stopping.wait(interval):
            self.touch_held()

    def _model_loop(self) -> None:
        while (prepared := self._next_prepared()) is not None:
            self._slot.release()
            if self._stopping.is_set():  # draining: prepared, never started
                self._hand_back(prepared.deliveries)
                continue
            try:
                self._drop_final(prepared)
            except Exception as exc:  # Redis away before the batch started: it did not run
                self._settle_after(exc, "preparing", prepared.deliveries)
                continue
            self._running = prepared.deliveries
            try:
                self.run(prepared)
            except Exception as exc:
                self._settle_after(exc, "running", prepared.deliveries)
            finally:
                self._running = []

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
        final (finished, canceled, expired) are redeliveries or canceled: settled here (a finished job's webhook
        queued again, in case the first run stopped short, then acked) and left out of the batch; so are jobs
        already started ``max_attempts`` times, failed with TooManyAttempts, and jobs past their deadline, expired.
        What a job asked of its webhook and its deadline come from its record (its producer's), not its message."""
        jobs = [delivery.job for delivery in deliveries]
        entry = self.settings.catalogue.models[jobs[0].model]
        started = now()
        running: list[JobRecord] = []
        previous_records = self.store.get_many([job.id for job in jobs])
        for job, previous in zip(jobs, previous_records, strict=True):
            kept = {name: getattr(previous, name) for name in PRODUCER_FIELDS} if previous else {"webhook": None}
            running.append(
                JobRecord.of(
                    job,
                    "running",
                    started_at=started,
                    attempts=(previous.attempts if previous else 0) + 1,
                    micro_batch_jobs=len(jobs),
                    worker=self.worker_name,
                    **kept,
                )
            )
        for i, previous in enumerate(previous_records):
            last = ("attempts", "started_at", "micro_batch_jobs", "worker")  # the last attempt's (none: defaults)
            before = {
                name: getattr(previous, name) if previous else JobRecord.model_fields[name].default for name in last
            }
            if running[i].past_deadline(started):
                running[i] = running[i].model_copy(update=before).expired(started)
            elif previous is not None and previous.attempts >= self.settings.max_attempts:
                failure = too_many_attempts(previous, self.settings.max_attempts)
                running[i] = failed_record(running[i].model_copy(update=before), failure, started)
        written = self.store.write(running)
        fresh = [i for i, ok in enumerate(written) if ok and running[i].state == "running"]
        finished = [i for i, ok in enumerate(written) if not ok or running[i].state != "running"]
        self.observer.started(entry, [running[i] for i in fresh])
        self.observer.finished([running[i] for i in finished if written[i]])  # given up now, not before
        already = [previous_records[i] for i in finished if not written[i]]
        self.observer.redelivered([record for record in already if record is not None and record.done])
        finals = [running[i] if written[i] else previous_records[i] for i in finished]
        self._announce_completed([record for record in finals if record is not None and record.done])
        self._announce_started([running[i] for i in fresh])
        self._ack([deliveries[i] for i in finished])
        for i in fresh:
            deliveries[i].record = running[i]
        return PreparedBatch(entry, jobs[0].parameters, [deliveries[i] for i in fresh], [running[i] for i in fresh])

    def _load(self, batch: PreparedBatch) -> bool:
        """Put the model's pipeline, from the cache, in the batch; when it cannot load, every job fails saying why
        (and False)."""
        try:
            batch.pipe = self.pipelines.get(batch.entry)
        except Exception as exc:
            if is_transient(exc):
                raise
            if not isinstance(exc, JobFailure):
                log.exception("loading %s failed", batch.entry.name)
                exc = ModelUnavailable(f"model {batch.entry.name} could not be loaded: {type(exc).__name__}: {exc}")
            batch.inputs = [exc] * len(batch.deliveries)
            return False
        limit_generation(batch.pipe, self.watch)
        watch_pieces(batch.pipe, lambda: self.watch.current)
        return True

    def _fetch_and_decode(self, batch: PreparedBatch) -> None:
        """Fetch the jobs' inputs in parallel and decode them into the batch; a bad input fails its job alone.
        Spooled objects' temporary files are released once decoded."""
        spec = task_spec(batch.entry.task)
        rate = getattr(getattr(batch.pipe, "feature_extractor", None), "sampling_rate", None)
        inputs = [delivery.job.input for delivery in batch.deliveries]
        raws = self.fetcher.fetch_many(inputs, self.settings.object_access(batch.entry))
        budget = self.settings.limits.max_decoded_bytes_per_batch
        held, deferred = 0, []
        try:
            for i, raw in enumerate(raws):
                item = _decoded_or_failure(spec, raw, self.settings.limits, rate)
                size = resident_bytes(item.value) if isinstance(item, Decoded) else 0
                if size and held and held + size > budget:  # the first input always fits: its own limits bound it
                    item.release()
                    deferred.append(i)
                    continue
                held += size
                batch.inputs.append(item)
        finally:
            for raw in raws:
                release(raw)
        if deferred:
            self._defer(batch, deferred)

    def _defer(self, batch: PreparedBatch, indices: list[int]) -> None:
        """Take these jobs out of the batch and give them back to the queue, their attempt unused: the batch's
        decoded media reached ``limits.max_decoded_bytes_per_batch``."""
        later = [batch.deliveries[i] for i in indices]
        log.info("%d job(s) wait for the next micro-batch: this one holds its decoded-bytes limit", len(later))
        deferred = set(indices)
        keep = [i for i in range(len(batch.deliveries)) if i not in deferred]
        batch.deliveries = [batch.deliveries[i] for i in keep]
        batch.records = [batch.records[i] for i in keep]
        self._hand_back(later)

    def run(self, batch: PreparedBatch) -> None:
        """Run the batch's good inputs through the pipeline, store every job's record, then ack."""
        if not batch.deliveries:
            return
        ok = [i for i, item in enumerate(batch.inputs) if isinstance(item, Decoded)]
        outcomes: list[Any] = list(batch.inputs)
        calls = 0
        if ok:
            spec = task_spec(batch.entry.task)

            def called(inputs: int, seconds: float) -> None:
                nonlocal calls
                calls += 1
                self.observer.pipeline_call(batch.entry, inputs, seconds)

            jobs = [batch.deliveries[i] for i in ok]
            deadlines = CallDeadlines(self.watch, batch.entry.run_time_limit(), jobs, called)
            alone = [k for k, i in enumerate(ok) if batch.records[i].attempts > 1]  # in a call that never returned?
            try:
                batch_size = batch.entry.batch_size_on(pipeline_device_type(batch.pipe))
                items = [batch.inputs[i] for i in ok]
                results = run_group(batch.pipe, spec, batch.parameters, batch_size, items, deadlines, alone)
            finally:
                for i in ok:
                    batch.inputs[i].release()  # temporary files (videos)
            for i, result in zip(ok, results, strict=True):
                outcomes[i] = result
        self.observer.micro_batch(batch.entry, len(batch.deliveries), calls)
        finished = now()
        final = [
            self._final(record, outcome, finished) for record, outcome in zip(batch.records, outcomes, strict=True)
        ]
        try:
            written = self.store.write(final, wait=self.replica_wait)
        except Exception as exc:
            if is_transient(exc):
                raise ResultsNotStored(f"{type(exc).__name__}: {exc}") from exc
            raise
        self.observer.finished(final)
        self._announce_completed([record for record, ok in zip(final, written, strict=True) if ok])
        self._ack(batch.deliveries)

    def _final(self, record: JobRecord, outcome: Any, finished: datetime) -> JobRecord:
        """A job's final record: failed, or succeeded with its result (offloaded when large). A result that cannot be
        stored fails its job alone; unreachable storage raises (the batch is requeued)."""
        if isinstance(outcome, Canceled):
            return record.ended("canceled", outcome.type, f"canceled while running: {outcome}", finished)
        if isinstance(outcome, JobFailure):
            return failed_record(record, outcome, finished)
        succeeded = record.model_copy(update={"state": "succeeded", "result": outcome, "finished_at": finished})
        if self.results is None:
            return succeeded
        try:
            return self.results.offload(succeeded)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception("could not store the result of job %s", record.id)
            return failed_record(
                record, InternalError(f"storing the result raised {type(exc).__name__}: {exc}{REPORT}"), finished
            )

    # -- steering: cancels, progress, webhook events --------------------------------------------------------

    def _drop_final(self, batch: PreparedBatch) -> None:
        """Take out of a prepared batch, before it runs, the jobs that became final since it was claimed (canceled
        by their producers), and ack them."""
        states = self.store.states([delivery.job.id for delivery in batch.deliveries])
        gone = {i for i, state in enumerate(states) if state in FINAL_STATES}
        if not gone:
            return
        log.info("%d job(s) canceled before their micro-batch started: not run", len(gone))
        for i in gone:
            if isinstance(batch.inputs[i], Decoded):
                batch.inputs[i].release()
        self._ack([batch.deliveries[i] for i in sorted(gone)])
        keep = [i for i in range(len(batch.deliveries)) if i not in gone]
        batch.deliveries = [batch.deliveries[i] for i in keep]
        batch.records = [batch.records[i] for i in keep]
        batch.inputs = [batch.inputs[i] for i in keep]

    def _steer_loop(self) -> None:
        steering = Steering(self)
        try:
            while not self._stopping.is_set():
                try:
                    steering.step()
                except Exception as exc:  # Redis away for a moment: the next step tries again
                    log.warning("could not read the running jobs' records: %s: %s", type(exc).__name__, exc)
                    steering.follow(None)
                    self._stopping.wait(STEER_S)
        finally:
            steering.follow(None)

    def _announce_started(self, records: list[JobRecord]) -> None:
        self.announce(
            [(record.id, "started", encode(record, "started")) for record in records if wants(record, "started")]
        )

    def _announce_completed(self, records: list[JobRecord]) -> None:
        self.announce([(record.id, "completed", None) for record in records if wants(record, "completed")])

    # -- settling messages --------------------------------------------------------------------------------

    def _settle_after(self, exc: Exception, stage: str, deliveries: list[Delivery]) -> None:
        """After ``exc`` escaped ``stage`` (preparing, running) for a batch: requeue its jobs when infrastructure is
        unreachable, else fail them once, saying why. Jobs requeued before they ran (object storage or Redis away
        while preparing), or that ran but whose final records Redis could not take or replicate, get their attempt
        back, so an outage (a failover) longer than a few retries fails no job; those stopped while running keep it
        (their attempts bound the retries)."""
        with self._held_lock:  # not those settled before the error (redeliveries of finished jobs)
            deliveries = [delivery for delivery in deliveries if self._held.get(delivery.job.id) is delivery]
        if is_transient(exc):
            log.warning("%s %d job(s): %s: %s; requeueing them", stage, len(deliveries), type(exc).__name__, exc)
            if stage == "preparing" or isinstance(exc, ResultsNotStored):
                self._hand_back(deliveries)
            else:
                self._requeue(deliveries)
            return
        log.error("%s %d job(s) failed; failing them", stage, len(deliveries), exc_info=exc)
        self._fail(deliveries, InternalError(f"{stage} the job raised {type(exc).__name__}: {exc}{REPORT}"))

    def _fail(self, deliveries: list[Delivery], failure: JobFailure) -> None:
        """Fail these jobs with ``failure`` and ack them. When their records cannot be written, they are requeued
        if storage is unreachable (attempts bound that), else acked all the same: never retried forever."""
        finished = now()
        records = [
            failed_record(delivery.record or self._first_record(delivery.job), failure, finished)
            for delivery in deliveries
        ]
        try:
            written = self.store.write(records, wait=self.replica_wait)
        except Exception as exc:
            if is_transient(exc):
                log.warning("could not record the failure of %d job(s) (%s); requeueing them", len(deliveries), exc)
                self._requeue(deliveries)
                return
            log.exception("could not record the failure of %d job(s); acking them all the same", len(deliveries))
        else:
            self.observer.finished(records)
            try:
                self._announce_completed([record for record, ok in zip(records, written, strict=True) if ok])
            except Exception:
                log.exception("could not queue the webhooks of %d failed job(s)", len(deliveries))
        self._ack(deliveries)

    def _first_record(self, job: Job) -> JobRecord:
        """The record of a job failed before it was claimed."""
        return JobRecord.of(job, "running", worker=self.worker_name)

    def end_overdue_call(self, call: RunningCall) -> None:
        """Settle every job this engine holds, before the watchdog ends the process stuck in ``call``. The consumer
        stops first, so that requeued jobs go to other workers. A call of one job fails it with JobTimeout. A call
        of several is requeued: on their next attempt each job runs in a call of its own, so only the one that
        hangs fails. Every other job is requeued with its attempt given back (it did not run). Never raises."""
        self._stopping.set()  # no more batches claimed
        deadline = time.monotonic() + SETTLING_S
        try:
            self._stop_consuming()
        except Exception:
            log.exception("could not stop consuming; jobs requeued now may come back to this worker")
        culprits = list(call.jobs)
        try:
            if len(culprits) == 1:
                self._fail(culprits, timeout_failure(call.limit_s, restarted=self.worker_name))
            else:
                self._requeue(culprits)
        except Exception:
            log.exception("could not settle the jobs of the overdue call")
        settled = self._requeue_held(deadline)
        _await_broker([*culprits, *settled], deadline)

    def _requeue_held(self, deadline: float) -> list[Delivery]:
        """Requeue every held job, its attempt given back, until none has come in for a second (the consumer may
        still deliver a message it was fetching when it stopped) or ``deadline``; the deliveries requeued."""
        requeued: list[Delivery] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0 and time.monotonic() < deadline:
            with self._held_lock:
                held = list(self._held.values())
            if not held:
                time.sleep(0.1)
                continue
            self._hand_back(held)
            requeued += held
            quiet_since = time.monotonic()
        return requeued

    def _hand_back(self, deliveries: list[Delivery]) -> None:
        """Requeue jobs that did not run, with the attempt they did not use given back."""
        if not deliveries:
            return
        try:
            self._give_back_attempts(deliveries)
        except Exception:
            log.exception("could not give back the attempts of %d requeued job(s)", len(deliveries))
        self._requeue(deliveries)

    def _give_back_attempts(self, deliveries: list[Delivery]) -> None:
        """Write claimed jobs back as queued, with the attempt they did not get to use."""
        queued = [
            delivery.record.model_copy(
                update={"state": "queued", "attempts": delivery.record.attempts - 1, "started_at": None}
            )
            for delivery in deliveries
            if delivery.record is not None
        ]
        if queued:
            self.store.write(queued)

    def _release(self, deliveries: list[Delivery]) -> None:
        """Stop keeping these deliveries alive: they are settled."""
        with self._held_lock:
            for delivery in deliveries:
                if self._held.get(delivery.job.id) is delivery:
                    del self._held[delivery.job.id]

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


class Steering:
    """What the steering thread does (see the module docstring). It looks at a call once it has run STEER_S, then
    every STEER_S, and at once when one of its jobs becomes final (a cancel is announced on the job's channel), so
    a call whose jobs are all canceled stops at its next piece."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.call: RunningCall | None = None
        self.pubsub: Any = None
        self.written: dict[str, tuple[float, float]] = {}  # job id -> (fraction, when) last written
        self.told: dict[str, float] = {}  # job id -> when its last progress event was queued

    def step(self) -> None:
        """Wait for news of the running call (or STEER_S), then look at it."""
        watch = self.engine.watch
        watch.began.clear()
        call = watch.current
        if call is not self.call:
            self.follow(None)
            self.call, self.written, self.told = call, {}, {}
        if call is None:  # asleep until a call begins: nothing to look at
            watch.began.wait(STEER_S * 4)
            return
        young = STEER_S - (time.monotonic() - call.started)
        if young > 0:  # most calls end before they are looked at: a look at most every STEER_S while busy
            self.engine._stopping.wait(young)
            return
        if self.pubsub is None:
            self.follow(call)
        if self.pubsub.get_message(timeout=STEER_S) is not None:
            while self.pubsub.get_message(timeout=0) is not None:
                pass
        if self.engine.watch.current is call:
            self.look(call)

    def follow(self, call: RunningCall | None) -> None:
        """Listen to the final-state announcements of ``call``'s jobs (None: stop listening)."""
        if self.pubsub is not None:
            with suppress(Exception):
                self.pubsub.close()
            self.pubsub = None
        if call is not None and call.jobs:
            store = self.engine.store
            self.pubsub = store.redis.pubsub(ignore_subscribe_messages=True)
            self.pubsub.subscribe(*{store.channel(delivery.job.id) for delivery in call.jobs})

    def look(self, call: RunningCall) -> None:
        """Stop the call if all its jobs are final (canceled); else report its progress."""
        deliveries = [delivery for delivery in call.jobs if delivery.record is not None]
        states = self.engine.store.states([delivery.job.id for delivery in deliveries])
        live = [delivery for delivery, state in zip(deliveries, states, strict=True) if state not in FINAL_STATES]
        if deliveries and not live:
            call.progress.abort.set()  # every job of the call is canceled: stop at the next piece
            log.info("the %d job(s) of the running call were canceled: stopping it at its next piece", len(states))
            return
        self._report(call, live)

    def _report(self, call: RunningCall, live: list[Delivery]) -> None:
        """Write the call's progress into its live jobs' records and queue the progress events asked for."""
        done = call.progress.fraction()
        if done is None:
            return
        fraction, detail = done
        at = time.monotonic()

        def is_due(job_id: str) -> bool:  # new progress, and none written for PROGRESS_WRITE_S
            last = self.written.get(job_id)
            return last is None or (last[0] != fraction and at - last[1] >= PROGRESS_WRITE_S)

        due = [delivery for delivery in live if is_due(delivery.job.id)]
        if not due:
            return
        progress = Progress(fraction=fraction, detail=detail, updated_at=now())
        records = [d.record.model_copy(update={"progress": progress}) for d in due]
        written = self.engine.store.write(records, only_if="running")
        events = []
        for record, ok in zip(records, written, strict=True):
            if not ok:
                continue
            self.written[record.id] = (fraction, at)
            if wants(record, "progress") and at - self.told.get(record.id, -PROGRESS_EVENT_S) >= PROGRESS_EVENT_S:
                self.told[record.id] = at
                events.append((record.id, "progress", encode(record, "progress")))
        self.engine.announce(events)
