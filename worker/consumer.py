"""How the Celery consumer hands jobs to the engine: a task Strategy and a consumer bootstep.

Celery calls a task's Strategy for every message it receives. pipeq's strategy validates the job and puts it
in the engine's micro-batcher instead of running it in the pool; the message stays unacked until the job's
record is stored (late ack), and the engine keeps touching it meanwhile so the broker does not redeliver it
however long the job waits (RabbitMQ keeps it with the worker's connection: nothing to touch). Messages that are
not valid jobs fail their job record and are acked: they would fail again on every redelivery. They are acked
even when their failure cannot be recorded (no job id, or the record store unreachable): logged, never requeued.
"""

import logging
import os
import threading
from functools import partial
from typing import Any

from celery import bootsteps

from pipeq.config.settings import DRAIN_MARGIN_S, Settings, drain_timeout
from pipeq.core.amqp import is_amqp_url, redis_urls, sibling_queues
from pipeq.core.contract import InvalidJob, Job
from pipeq.core.records import JobError, JobRecord, RecordStore, now
from pipeq.core.results import ResultStorage
from pipeq.core.storage import s3_client
from pipeq.ops.http import Health, redis_health, serve
from pipeq.webhooks.delivery import announce_events
from pipeq.worker.engine import Delivery, Engine
from pipeq.worker.media import MediaFetcher
from pipeq.worker.metrics import WorkerMetrics, cuda_memory
from pipeq.worker.observers import Observers
from pipeq.worker.pipelines import PipelineCache, check_can_load
from pipeq.worker.task_events import TaskEvents

log = logging.getLogger(__name__)


def build_engine(app: Any, consumer: Any) -> Engine:
    """An engine with its record store, media fetcher, pipeline cache and result storage from the app's settings;
    the webhook events jobs ask for are queued. The fetcher reads only objects under the
    settings' ``allowed_object_prefixes`` (the engine narrows that to each model's). Its observers count what it
    does (Prometheus metrics) and, when task events are on, send Celery's task events for each job."""
    settings: Settings = app.pipeq_settings
    device = getattr(app, "pipeq_device_label", None) or settings.device  # the device it was pinned to
    observers = Observers([])
    s3 = s3_client(settings, settings.fetch_concurrency)
    limit = settings.limits.max_media_bytes
    fetcher = MediaFetcher(
        s3, limit, settings.fetch_concurrency, access=settings.object_access(), observe=observers.media_fetched
    )
    pipelines = PipelineCache(settings.device, settings.pipeline_cache_bytes, on_load=observers.model_loaded)
    engine = Engine(
        settings,
        RecordStore(settings.result_backend, settings.result_ttl),
        fetcher,
        pipelines,
        consumer.hostname,
        results=ResultStorage(s3, settings.results_bucket, settings.max_inline_result_bytes),
        announce=partial(announce_events, app),
        observer=observers,
    )
    memory = cuda_memory(settings.device)
    observers.observers.append(
        WorkerMetrics(settings.catalogue, device, pipelines.held_sizes, engine.held_count, memory)
    )
    observers.observers.append(TaskEvents(consumer))
    return engine


class EngineStep(bootsteps.StartStopStep):
    """Owns the engine for the life of the consumer: started with it, drained at shutdown. Serves the worker's
    metrics and health probes (``[metrics] port``) from the start, so a probe sees it load."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        parent.pipeq_engine = build_engine(parent.app, parent)
        parent.pipeq_queues = []
        parent.pipeq_metrics = serve(parent.app.pipeq_settings.metrics, worker_health(parent))

    def start(self, parent: Any) -> None:
        settings: Settings = parent.app.pipeq_settings
        queues = parent.pipeq_queues = [queue.name for queue in parent.task_consumer.queues]
        check_can_load(settings.catalogue.for_queues(queues), settings.device)  # refuse to start, saying why
        if is_amqp_url(settings.broker_url):
            _consume_high_queues(parent, queues)
        # A worker in the main thread owns its process: its watchdog may end it when a call cannot be stopped.
        owns_process = threading.current_thread() is threading.main_thread()
        parent.pipeq_engine.start(
            end_process=os._exit if owns_process else None, stop_consuming=partial(_stop_consuming, parent)
        )

    def shutdown(self, parent: Any) -> None:
        """The drain: Celery has stopped taking messages; the engine finishes the micro-batch in hand and gives
        back the rest, within the drain timeout (less the margin that closing the connections takes)."""
        timeout = drain_timeout(parent.app.pipeq_settings, parent.pipeq_queues) - DRAIN_MARGIN_S / 2
        parent.pipeq_engine.stop(max(1.0, timeout), while_waiting=partial(_carry_out_settlements, parent))
        if parent.pipeq_metrics is not None:
            parent.pipeq_metrics.close()


def _consume_high_queues(consumer: Any, queues: list[str]) -> None:
    """On RabbitMQ, take the high jobs of ``queues`` from their high siblings too (pipeq.core.amqp), each a quorum
    queue (made on demand) with a prefetch of its own. Added before the consumer's loop starts consuming, which
    consumes them all once their callbacks are set."""
    for name in sibling_queues(queues):
        consumer.task_consumer.add_queue(consumer.app.amqp.queues[name])


def batching_strategy(task: Any, app: Any, consumer: Any, **_: Any) -> Any:
    """The Celery Strategy of ``pipeq.infer``: validate, then micro-batch (see the module docstring)."""
    settings: Settings = app.pipeq_settings
    errors = consumer.connection_errors

    def on_message(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any = None, **__: Any) -> None:
        def settle() -> None:
            ack(log, errors)

        def requeue() -> None:
            reject(log, errors, True)

        try:
            args, _kwargs, _embed = message.decode() if body is None else (body["args"], body["kwargs"], {})
            job = Job.model_validate(args[0])
            entry = settings.catalogue.resolve(job.task, job.model)
            job.check(settings.limits, entry)
        except Exception as exc:  # a broken message: fail its job, never retry it
            try:
                _fail_unreadable(consumer.pipeq_engine.store, message, exc)
            except Exception:  # it would fail again on every redelivery: acked all the same
                log.exception("could not record the failure of message %r; acking it all the same", message.headers)
            settle()
            return
        if entry.name != job.model:
            job = job.model_copy(update={"model": entry.name})
        touch = getattr(getattr(getattr(message, "channel", None), "qos", None), "touch", None)
        delivery = Delivery(job, settle, requeue, touch, message.delivery_tag, settled=lambda: message.acknowledged)
        consumer.pipeq_engine.submit(delivery)

    return on_message


def worker_health(consumer: Any) -> Health:
    """The worker's probes. Live: the engine's loops run (or have not started yet: models are being checked).
    Ready: the engine runs, is not draining, and the broker and the record store answer."""
    settings: Settings = consumer.app.pipeq_settings
    services = redis_health(*redis_urls(settings))  # a RabbitMQ broker: Celery reconnects to it itself

    def live() -> str | None:
        engine = consumer.pipeq_engine
        if engine.draining or engine.alive() or not engine.started:
            return None
        return "the engine's loops stopped: restart the worker (its log says why)"

    def ready() -> str | None:
        engine = consumer.pipeq_engine
        if engine.draining:
            return "draining: the worker takes no more jobs and is about to exit"
        if not engine.alive():
            return "starting: the worker is connecting and checking the models of its queues"
        return services.ready()

    return Health(live=live, ready=ready)


def _carry_out_settlements(consumer: Any) -> None:
    """Run the acks and requeues the engine asked the consumer for (``call_soon``), on this thread, when it is the
    consumer's own and the consumer's event loop no longer runs them (a drain, after SIGTERM)."""
    hub = getattr(consumer, "hub", None)
    if hub is None:
        consumer.perform_pending_operations()
        return
    if getattr(hub, "_loop_thread", None) != threading.get_ident():
        return  # the loop runs on another thread, which carries them out itself
    for callback in hub._pop_ready():
        try:
            callback()
        except Exception:
            log.exception("could not settle a message while draining; the broker will redeliver it")


def _stop_consuming(consumer: Any, timeout: float = 5.0) -> None:
    """Stop taking messages, on the consumer's own thread as Celery wants it, and return once it has (or after
    ``timeout``); a message already being fetched may still arrive."""
    stopped = threading.Event()

    def cancel() -> None:
        try:
            consumer.task_consumer.cancel()
        finally:
            stopped.set()

    consumer.call_soon(cancel)
    if not stopped.wait(timeout):
        log.warning("the consumer did not stop taking messages within %g s", timeout)


def _fail_unreadable(store: RecordStore, message: Any, exc: Exception) -> None:
    """Fail the job of a message that is not a valid job, when its headers name one."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    job_id = headers.get("id")
    log.error("refusing message %r: %s", job_id, exc)
    if not isinstance(job_id, str) or not job_id:
        return
    error = JobError(type=InvalidJob.__name__, message=f"the job is not valid: {exc}")
    record = JobRecord(
        state="failed", id=job_id, task="?", model="?", submitted_at=now(), finished_at=now(), error=error, attempts=1
    )
    store.write([record])
