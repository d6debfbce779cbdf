"""Webhook delivery: a Celery task on its own queue POSTs each finished job's record to its webhook URL.

The engine calls :func:`enqueue_deliveries` for finished jobs that asked for a webhook, before acking them.
The delivery task (:data:`DELIVER_TASK`, registered by :func:`register`, late ack) runs on the webhooks
queue, so a slow receiver never holds up a model:

* the URL is the one in the job's record, written by the producer that submitted the job; a delivery message
  carries only the job id (one that also names a URL is refused unless it is the record's), so whoever can
  write to the broker cannot send a job's result anywhere else;
* the body is built at send time from the job's record in Redis (an offloaded result is read back);
* it is signed per Standard Webhooks (see :mod:`pipeq.webhooks.signing`); ``webhook-id`` is the job id on
  every attempt. Without a ``[webhooks] secret`` nothing is delivered, unless ``[webhooks] unsigned = true``;
* one attempt has one deadline, ``[webhooks] timeout`` (see :mod:`pipeq.webhooks.http`); deadlines, connection
  errors, 5xx and 429 are retried with exponential backoff and full jitter (or after the receiver's
  ``Retry-After``), up to ``max_attempts``; other statuses, redirects and unsafe URLs are not;
* a delivery that gives up lands in the dead-letter store (:mod:`pipeq.webhooks.dead_letters`;
  ``pipeq webhooks failed`` lists it, :func:`redeliver` or ``pipeq webhooks redeliver ID`` queues it again);
* one job is delivered at most once successfully: after a 2xx a marker is set, and every attempt checks it
  under a per-job lock held longer than an attempt's deadline, so a second delivery queued for a re-run job
  sends nothing.
"""

import logging
import random
import time
from contextlib import suppress
from functools import cached_property
from typing import Any

import redis
from celery import Celery, Task

from pipeq.config.settings import Settings, Webhooks
from pipeq.core.contract import Job
from pipeq.core.messaging import make_celery, sent_now
from pipeq.core.records import JobRecord, RecordStore
from pipeq.core.results import ResultStorage
from pipeq.core.storage import s3_client
from pipeq.ops import metrics
from pipeq.webhooks.dead_letters import DeadLetters
from pipeq.webhooks.http import Guard, PermanentFailure, TemporaryFailure, post
from pipeq.webhooks.payload import encode
from pipeq.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

DELIVER_TASK = "pipeq.webhook"
REQUEST_HEADERS = {"Content-Type": "application/json", "User-Agent": "pipeq"}
"""Sent with every delivery, besides the ``webhook-*`` headers."""
LOCK_MARGIN_SECONDS = 10.0
"""How much longer than an attempt's deadline the per-job lock is held (the Redis calls around the POST)."""


def delivered_key(job_id: str) -> str:
    """The marker set once a job's webhook got a 2xx."""
    return f"pipeq:webhooks:delivered:{job_id}"


def enqueue_deliveries(app: Any, jobs: list[Job]) -> None:
    """Queue one delivery per job on the webhooks queue (a redelivered job may queue a second: see deliver).
    The message names the job only: the URL is read from its record."""
    if not jobs:
        return
    queue = app.pipeq_settings.webhooks.queue
    with app.producer_or_acquire() as producer:
        for job in jobs:
            app.send_task(
                DELIVER_TASK,
                args=[job.id],
                queue=queue,
                producer=producer,
                headers=sent_now(),
            )


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
        if settings.broker_visibility_timeout() <= self.lock_seconds:
            log.warning(
                "the broker's visibility timeout (%d s) is not longer than a webhook delivery's lock (%.0f s:"
                " [webhooks] timeout + %.0f s): a delivery redelivered after a crash may find the lock held and"
                " be skipped; raise visibility_timeout",
                settings.broker_visibility_timeout(),
                self.lock_seconds,
                LOCK_MARGIN_SECONDS,
            )

    @cached_property
    def results(self) -> ResultStorage:
        s = self.settings
        return ResultStorage(s3_client(s), s.results_bucket, s.max_inline_result_bytes)

    @property
    def lock_seconds(self) -> float:
        """How long the per-job lock is held at most: longer than one attempt's deadline, so two deliveries of one
        job never overlap."""
        return self.config.timeout + LOCK_MARGIN_SECONDS

    def delivered(self, job_id: str) -> bool:
        return bool(self.store.redis.exists(delivered_key(job_id)))

    def attempt(self, job_id: str, url: str | None = None) -> bool:
        """One attempt; True if sent now, False if skipped (already delivered, or being sent right now).

        ``url`` is what the delivery message named, if anything: it must be the record's own webhook. Raises
        TemporaryFailure or PermanentFailure when the receiver did not take it (or it was not sent).
        """
        refusal = missing_secret(self.config)
        if refusal:
            raise PermanentFailure(refusal)
        if self.delivered(job_id):
            return False
        record = self.final_record(job_id)
        target = webhook_of(record, url)
        body = encode(self.results.resolve(record))
        lock = self.store.redis.lock(f"pipeq:webhooks:sending:{job_id}", timeout=self.lock_seconds)
        if not lock.acquire(blocking=False):
            return False  # another delivery of this job is in flight; it retries itself if it fails
        try:
            if self.delivered(job_id):
                return False
            secret = self.config.secret.get_secret_value() if self.config.secret else None
            headers = {**REQUEST_HEADERS, **signed_headers(secret, job_id, body)}
            post(target, body, headers, self.config, self.guard)
            self.store.redis.set(delivered_key(job_id), 1, ex=self.settings.result_ttl)
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
    longest_wait = app.pipeq_settings.broker_visibility_timeout() / 2

    # shared=False: a shared task would be copied, with this app's settings, into every app created later.
    @app.task(name=DELIVER_TASK, bind=True, acks_late=True, max_retries=None, ignore_result=True, shared=False)
    def deliver(self: Task, job_id: str, url: str | None = None) -> None:
        """POST job ``job_id``'s record to its webhook; retry, or dead-letter when there is no point. ``url``
        (messages queued before URLs were read from records) must be the record's."""
        config = deliverer.config
        attempt = self.request.retries + 1
        began = time.monotonic()
        try:
            sent = deliverer.attempt(job_id, url)
        except PermanentFailure as exc:
            _count(began, "failed")
            _give_up(deliverer, job_id, url, attempt, exc)
            return
        except Exception as exc:  # TemporaryFailure, or Redis / object storage trouble: worth another go
            failure = exc
        else:
            _count(began, "delivered" if sent else "skipped")
            if sent:
                log.info("webhook for job %s delivered on attempt %d", job_id, attempt)
            return
        if attempt >= config.max_attempts:
            _count(began, "failed")
            _give_up(deliverer, job_id, url, attempt, failure)
            return
        _count(began, "retried")
        delay = retry_delay(config, self.request.retries, getattr(failure, "retry_after", None))
        delay = min(delay, longest_wait)  # a retry held longer than the visibility timeout would run twice
        unexpected = not isinstance(failure, TemporaryFailure)
        log.warning(
            "webhook for job %s: %s; attempt %d in %.2f s", job_id, failure, attempt + 1, delay, exc_info=unexpected
        )
        raise self.retry(countdown=delay)


def _count(began: float, outcome: str) -> None:
    """One attempt in the metrics: its outcome and how long it took."""
    metrics.webhook_attempts.labels(outcome).inc()
    metrics.webhook_attempt.labels(outcome).observe(time.monotonic() - began)


def _give_up(deliverer: Deliverer, job_id: str, url: str | None, attempts: int, exc: Exception) -> None:
    metrics.webhook_dead_letters.inc()
    deliverer.dead_letters.add(job_id, deliverer.recorded_url(job_id) or url or "", attempts, str(exc))
    log.error("webhook for job %s failed after %d attempt(s): %s", job_id, attempts, exc)


# -- operations: the webhooks app, redelivery ----------------------------------------------------------------


def create_webhooks_app(settings: Settings) -> Celery:
    """A Celery app that only delivers webhooks (no models, no torch)."""
    app = make_celery(settings)
    app.pipeq_settings = settings
    app.conf.worker_prefetch_multiplier = 4
    register(app)
    return app


def redeliver(settings: Settings, job_id: str, app: Celery | None = None) -> dict[str, Any]:
    """Take a job's delivery out of the dead-letter store and queue it afresh; KeyError if it is not there."""
    letters = DeadLetters(RecordStore(settings.result_backend).redis)
    entry = letters.take(job_id)
    if entry is None:
        raise KeyError(f"no failed webhook delivery for job {job_id}")
    sender = app or make_celery(settings)
    try:
        sender.send_task(DELIVER_TASK, args=[job_id], queue=settings.webhooks.queue, headers=sent_now())
    except Exception:
        letters.add(job_id, entry["url"], entry["attempts"], entry["last_error"])  # keep it for another try
        raise
    finally:
        if app is None:
            sender.close()
    return entry
