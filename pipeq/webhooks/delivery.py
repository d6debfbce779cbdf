"""Webhook delivery: a Celery task on its own queue POSTs each event of a job (started, progress, completed) to its
webhook URL.

Events are numbered and queued by :mod:`pipeq.core.webhook_events`: the engine queues ``started`` and
``progress`` as they happen and, through :func:`enqueue_deliveries`, ``completed`` for finished jobs, before
acking them; a client that cancels a job, or finds it expired, queues its ``completed``. The delivery task
(:data:`DELIVER_TASK`, registered by :func:`register`, late ack) runs on the webhooks queue, so a slow receiver
never holds up a model:

* the URL is the one in the job's record, written by the producer that submitted the job; a delivery message
  carries only the job id (one that also names a URL is refused unless it is the record's), so whoever can
  write to the broker cannot send a job's result anywhere else;
* the body is built at send time from the job's record in Redis (an offloaded result is read back);
* only the events the job's record asks for are sent (a message naming another is refused);
* it is signed per Standard Webhooks (see :mod:`pipeq.webhooks.signing`); ``webhook-id`` is the job id for
  ``completed`` and ``<job id>:<sequence>`` for the other events, the same on every attempt. Without a
  ``[webhooks] secret`` nothing is delivered, unless ``[webhooks] unsigned = true``;
* one attempt has one deadline, ``[webhooks] timeout`` (see :mod:`pipeq.webhooks.http`); deadlines, connection
  errors, 5xx and 429 are retried with exponential backoff and full jitter (or after the receiver's
  ``Retry-After``), up to ``max_attempts``; other statuses, redirects and unsafe URLs are not;
* a delivery that gives up lands in the dead-letter store (:mod:`pipeq.webhooks.dead_letters`;
  ``pipeq webhooks failed`` lists it, :func:`redeliver` or ``pipeq webhooks redeliver ID`` queues it again);
* each event is delivered at most once successfully: after a 2xx a marker is set, and every attempt checks it
  under a per-event lock held longer than an attempt's deadline, so a second ``completed`` queued for a re-run job
  sends nothing. A delivery that finds the lock taken waits until it is free (:class:`InFlight`) without using an
  attempt: a lock left by an attempt cut off by a Redis restart must not dead-letter a webhook that was sent.
  Events may arrive out of order (retries): receivers order them by their ``sequence``.
"""

import json
import logging
import random
import time
from contextlib import suppress
from functools import cached_property
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject

from pipeq.config.settings import Settings, Webhooks
from pipeq.core.contract import WEBHOOK_EVENTS
from pipeq.core.messaging import keepalive_interval_s, make_celery, sent_now
from pipeq.core.records import JobRecord, RecordStore
from pipeq.core.redis_client import redis_client
from pipeq.core.results import ResultStorage
from pipeq.core.storage import s3_client
from pipeq.core.webhook_events import DELIVER_TASK, enqueue_events, events_key, stored_body
from pipeq.ops import metrics
from pipeq.webhooks.dead_letters import DeadLetters
from pipeq.webhooks.http import Guard, PermanentFailure, TemporaryFailure, post
from pipeq.webhooks.keepalive import KeepAlive
from pipeq.webhooks.payload import encode
from pipeq.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

REQUEST_HEADERS = {"Content-Type": "application/json", "User-Agent": "pipeq"}
"""Sent with every delivery, besides the ``webhook-*`` headers."""
LOCK_MARGIN_SECONDS = 10.0
"""How much longer than an attempt's deadline the per-job lock is held (the Redis calls around the POST)."""
LOCK_RECHECK_SECONDS = 0.05
"""How long after a taken lock's expiry a waiting delivery tries again."""


class InFlight(TemporaryFailure):
    """Another delivery of the same event holds its lock (or died holding it): try again once the lock is free,
    in ``retry_after`` seconds, without counting an attempt."""


def delivered_key(webhook_id: str) -> str:
    """The marker set once an event's delivery got a 2xx (its webhook id: the job id for ``completed``)."""
    return f"pipeq:webhooks:delivered:{webhook_id}"


def webhook_id(job_id: str, event: str, sequence: int | None) -> str:
    """The ``webhook-id`` of a job's event: the job id for completed (one per job), else ``<job id>:<sequence>``."""
    return job_id if event == "completed" or sequence is None else f"{job_id}:{sequence}"


def enqueue_deliveries(app: Any, jobs: list[Any]) -> None:
    """Queue the ``completed`` event of each finished job on the webhooks queue (a redelivered job may queue a
    second: see deliver). The message names the job only: the URL is read from its record."""
    announce_events(app, [(job.id, "completed", None) for job in jobs])


def announce_events(app: Any, events: list[tuple[str, str, bytes | None]]) -> None:
    """Number and queue webhook events, each ``(job id, event, body)`` (see
    :func:`pipeq.core.webhook_events.enqueue_events`), on ``app``'s webhooks queue."""
    if events:
        settings: Settings = app.pipeq_settings
        enqueue_events(app, settings.webhooks.queue, records_redis(app), settings.result_ttl, events)


def records_redis(app: Any) -> redis.Redis:
    """The app's client of the record store's Redis (where events are numbered), made on first use."""
    client = getattr(app, "pipeq_records_redis", None)
    if client is None:
        client = app.pipeq_records_redis = redis_client(app.pipeq_settings.result_backend)
    return client


def missing_secret(config: Webhooks) -> str | None:
    """Why nothing may be delivered with this config (no secret, and unsigned deliveries not allowed), or None."""
    if config.secret is not None or config.unsigned:
        return None
    return (
        "no [webhooks] secret is set, so deliveries could not be signed and receivers could not tell them from"
        " forgeries: set one (`pipeq webhooks new-secret` prints one; [webhooks] secret or PIPEQ_WEBHOOKS__SECRET),"
        " or set [webhooks] unsigned = true (PIPEQ_WEBHOOKS__UNSIGNED=true) to deliver without signatures"
    )


def retry_delay(config: Webhooks, retries: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt: the receiver's Retry-After if given, else full jitter; capped."""
    if retry_after is not None:
        return min(config.max_backoff, retry_after)
    return random.uniform(0, min(config.max_backoff, config.backoff * 2**retries))


# -- delivery ------------------------------------------------------------------------------------------------


class Deliverer:
    """Sends one job's webhook: reads its record, signs, POSTs, marks it delivered or dead-letters it."""

    def __init__(self, settings: Settings, guard: Guard | None = None) -> None:
        self.settings = settings
        self.config = settings.webhooks
        self.store = RecordStore(settings.result_backend, settings.result_ttl)
        self.dead_letters = DeadLetters(self.store.redis)
        self.guard = guard or Guard(self.config.allow_private)

    @cached_property
    def results(self) -> ResultStorage:
        s = self.settings
        return ResultStorage(s3_client(s), s.results_bucket, s.max_inline_result_bytes)

    @property
    def lock_seconds(self) -> float:
        """How long the per-job lock is held at most: longer than one attempt's deadline, so two deliveries of one
        job never overlap."""
        return self.config.timeout + LOCK_MARGIN_SECONDS

    def delivered(self, webhook_id: str) -> bool:
        return bool(self.store.redis.exists(delivered_key(webhook_id)))

    def attempt(
        self, job_id: str, url: str | None = None, event: str = "completed", sequence: int | None = None
    ) -> bool:
        """One attempt at delivering a job's ``event`` (its ``sequence`` number); True if sent now, False if skipped
        (already delivered). Another delivery of it in flight is a TemporaryFailure: once its lock is released or
        expired, the retry finds it delivered, or sends it (its worker died before it could).

        ``url`` is what the delivery message named, if anything: it must be the record's own webhook. Raises
        TemporaryFailure or PermanentFailure when the receiver did not take it (or it was not sent).
        """
        refusal = missing_secret(self.config)
        if refusal:
            raise PermanentFailure(refusal)
        if event not in WEBHOOK_EVENTS:
            raise PermanentFailure(f"unknown webhook event {str(event)[:40]!r}; events: {', '.join(WEBHOOK_EVENTS)}")
        if sequence is not None and (isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 1):
            raise PermanentFailure(f"a webhook event's sequence is a number from 1, not {str(sequence)[:40]!r}")
        identity = webhook_id(job_id, event, sequence)
        if self.delivered(identity):
            return False
        record = self.final_record(job_id) if event == "completed" else self.live_record(job_id)
        if event not in record.webhook_events:
            raise PermanentFailure(
                f"job {job_id} asked for the webhook events {', '.join(record.webhook_events)}, not {event}"
            )
        if event == "completed":
            body = encode(self.results.resolve(record), event, sequence)
        else:
            body = self.event_body(job_id, event, sequence)
        target = webhook_of(record, url)
        lock = self.store.redis.lock(f"pipeq:webhooks:sending:{identity}", timeout=self.lock_seconds)
        if not lock.acquire(blocking=False):  # another delivery of it is in flight, or died holding the lock
            free_in = min(max(self.store.redis.pttl(lock.name), 0) / 1000, self.lock_seconds) + LOCK_RECHECK_SECONDS
            raise InFlight(f"another delivery of {identity} is in flight; trying again after it", free_in)
        try:
            if self.delivered(identity):
                return False
            secret = self.config.secret.get_secret_value() if self.config.secret else None
            headers = {**REQUEST_HEADERS, **signed_headers(secret, identity, body)}
            post(target, body, headers, self.config, self.guard)
            self.store.redis.set(delivered_key(identity), 1, ex=self.settings.result_ttl)
            if sequence is not None and event != "completed":  # its stored body is no longer needed
                self.store.redis.hdel(events_key(job_id), str(sequence))
            return True
        finally:
            with suppress(redis.exceptions.LockError):  # expired meanwhile: nothing to release
                lock.release()

    def final_record(self, job_id: str) -> JobRecord:
        """The job's record as stored now; PermanentFailure if there is none, TemporaryFailure if not finished."""
        record = self.store.get(job_id)
        if record is None:
            raise PermanentFailure(f"job {job_id} has no record (expired, or never submitted)")
        if not record.done:
            raise TemporaryFailure(f"job {job_id} is {record.state}, not finished")
        return record

    def live_record(self, job_id: str) -> JobRecord:
        """The job's record as stored now, in any state; PermanentFailure if there is none."""
        record = self.store.get(job_id)
        if record is None:
            raise PermanentFailure(f"job {job_id} has no record (expired, or never submitted)")
        return record

    def event_body(self, job_id: str, event: str, sequence: int | None) -> bytes:
        """The body of a job's started or progress event: the snapshot stored when it happened, with its sequence
        number; PermanentFailure if there is none."""
        stored = None if sequence is None else stored_body(self.store.redis, job_id, sequence)
        if stored is None:
            raise PermanentFailure(f"job {job_id} has no stored {event} event numbered {sequence}")
        body = json.loads(stored)
        if body.get("event") != event or body.get("id") != job_id:
            raise PermanentFailure(f"the stored event {sequence} of job {job_id} is not a {event} event")
        return json.dumps({**body, "sequence": sequence}, separators=(",", ":")).encode()

    def recorded_url(self, job_id: str) -> str | None:
        """The webhook URL in the job's record, if it can be read (for dead letters)."""
        with suppress(Exception):
            record = self.store.get(job_id)
            return record.webhook if record else None
        return None


def webhook_of(record: JobRecord, claimed: str | None = None) -> str:
    """The URL a job's webhook goes to: its record's. PermanentFailure when the record names none, or when a
    delivery message names another (it did not come from pipeq)."""
    if not record.webhook:
        raise PermanentFailure(f"job {record.id}'s record names no webhook; nothing to deliver")
    if claimed is not None and claimed != record.webhook:
        raise PermanentFailure(
            f"refusing a delivery of job {record.id} to {claimed[:200]}: the job was submitted with another webhook;"
            " deliveries go only to the URL in the job's record"
        )
    return record.webhook


def register(app: Any) -> None:
    """Register the delivery task on ``app``: late ack, retried by itself (see the module docstring)."""
    deliverer = Deliverer(app.pipeq_settings)
    app.pipeq_deliverer = deliverer

    # shared=False: a shared task would be copied, with this app's settings, into every app created later.
    @app.task(name=DELIVER_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True, shared=False)
    def deliver(
        self: Task,
        job_id: str,
        url: str | None = None,
        event: str = "completed",
        sequence: int | None = None,
        waited: int = 0,
    ) -> None:
        """POST event ``event`` (numbered ``sequence``) of job ``job_id`` to its webhook; retry, or dead-letter when
        there is no point. ``url`` (messages queued before URLs were read from records) must be the record's.
        ``waited``: the retries so far that only waited for another delivery's lock (not attempts)."""
        config = deliverer.config
        waits = lock_waits(waited, self.request.retries)
        attempt = self.request.retries + 1 - waits
        began = time.monotonic()
        try:
            sent = deliverer.attempt(job_id, url, event, sequence)
        except PermanentFailure as exc:
            _count(began, "failed")
            _give_up(deliverer, job_id, url, attempt, exc, event)
            return
        except Exception as exc:  # TemporaryFailure, or Redis / object storage trouble: worth another go
            failure = exc
        else:
            _count(began, "delivered" if sent else "skipped")
            if sent:
                log.info("webhook for job %s delivered on attempt %d", job_id, attempt)
            return
        waiting = isinstance(failure, InFlight) and waits < config.max_attempts
        if not waiting and attempt >= config.max_attempts:
            _count(began, "failed")
            _give_up(deliverer, job_id, url, attempt, failure, event)
            return
        if waiting:
            _count(began, "waited")
            delay, waits = failure.retry_after, waits + 1
            log.info("webhook for job %s: %s; in %.2f s (not an attempt)", job_id, failure, delay)
        else:
            _count(began, "retried")
            delay = retry_delay(config, attempt - 1, getattr(failure, "retry_after", None))
            unexpected = not isinstance(failure, TemporaryFailure)
            log.warning(
                "webhook for job %s: %s; attempt %d in %.2f s", job_id, failure, attempt + 1, delay, exc_info=unexpected
            )
        # Every retry carries the waits counted here, so a message's own claim never outlives its first run.
        kwargs = {"url": url, "event": event, "sequence": sequence, "waited": waits}
        try:
            raise self.retry(args=[job_id], kwargs=kwargs, countdown=delay, retry_policy=RETRY_PUBLISH_POLICY)
        except Reject as exc:
            # Celery could not queue the retry (the broker away longer than a failover) and would drop this message
            # with it: back to the queue instead, or, the broker being away, redelivered after dead_after_s.
            log.warning("webhook for job %s: could not queue attempt %d (%s); requeueing it", job_id, attempt + 1, exc)
            raise Reject(exc.reason, requeue=True) from None


RETRY_PUBLISH_POLICY = {"max_retries": 20, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}
"""How long queueing a delivery's retry keeps trying while the broker is away (about 19 s: a restart, a failover)."""


def lock_waits(waited: Any, retries: int) -> int:
    """How many of a delivery's ``retries`` only waited for a lock, from its message's ``waited``: a whole number
    from 0 to ``retries`` (anything else in a message counts as 0, so it cannot buy attempts)."""
    if isinstance(waited, bool) or not isinstance(waited, int):
        return 0
    return min(max(waited, 0), retries)


def _count(began: float, outcome: str) -> None:
    """One attempt in the metrics: its outcome and how long it took."""
    metrics.webhook_attempts.labels(outcome).inc()
    metrics.webhook_attempt.labels(outcome).observe(time.monotonic() - began)


def _give_up(
    deliverer: Deliverer, job_id: str, url: str | None, attempts: int, exc: Exception, event: str = "completed"
) -> None:
    """Give up a delivery: a ``completed`` one goes to the dead-letter store (to be redelivered); the events before
    it are only logged (the completed event that follows carries the outcome)."""
    if event != "completed":
        log.error("webhook %s event of job %s dropped after %d attempt(s): %s", event, job_id, attempts, exc)
        return
    metrics.webhook_dead_letters.inc()
    deliverer.dead_letters.add(job_id, deliverer.recorded_url(job_id) or url or "", attempts, str(exc))
    log.error("webhook for job %s failed after %d attempt(s): %s", job_id, attempts, exc)


# -- operations: the webhooks app, redelivery ----------------------------------------------------------------


def create_webhooks_app(settings: Settings) -> Celery:
    """A Celery app that only delivers webhooks (no models, no torch)."""
    app = make_celery(settings, webhooks=True)
    app.pipeq_settings = settings
    app.conf.worker_prefetch_multiplier = 4
    register(app)
    app.pipeq_keepalive_task = DELIVER_TASK
    app.pipeq_keepalive_interval_s = keepalive_interval_s(settings)
    app.steps["consumer"].add(KeepAlive)  # held deliveries, waiting retries included, are kept alive
    return app


def redeliver(settings: Settings, job_id: str, app: Celery | None = None) -> dict[str, Any]:
    """Take a job's delivery out of the dead-letter store and queue it afresh; KeyError if it is not there."""
    letters = DeadLetters(RecordStore(settings.result_backend).redis)
    entry = letters.take(job_id)
    if entry is None:
        raise KeyError(f"no failed webhook delivery for job {job_id}")
    sender = app or make_celery(settings, webhooks=True)
    try:
        sender.send_task(DELIVER_TASK, args=[job_id], queue=settings.webhooks.queue, headers=sent_now())
    except Exception:
        letters.add(job_id, entry["url"], entry["attempts"], entry["last_error"])  # keep it for another try
        raise
    finally:
        if app is None:
            sender.close()
    return entry
