"""The Celery wiring producers and workers share: one task name, JSON only, late acks, Redis broker options."""

import os
import time

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import Settings
from pipeq.core.amqp import celery_options, is_amqp_url
from pipeq.core.redis_client import is_sentinel_url, kombu_sentinel_url, parse_sentinel_url

TASK_NAME = "pipeq.infer"
SENT_AT_HEADER = "pipeq_sent_at"
"""The message header saying when it was sent (Unix time): the backlog's oldest waiting age reads it."""


BROKER_PRIORITIES = {"normal": 0, "high": 1, "low": 2}
"""The message priority each job priority is sent with. It only names the Redis list a message waits in (normal:
the queue's own list, so messages sent without a priority are normal); pipeq's transport decides the order in
which the lists are read (pipeq.core.broker)."""


def broker_priority(priority: str) -> int:
    """The message priority of a job ``priority`` (low, normal, high)."""
    return BROKER_PRIORITIES[priority]


def sent_now() -> dict[str, float]:
    """The headers of a message sent now."""
    return {SENT_AT_HEADER: time.time()}


def node_name(kind: str, name: str | None = None) -> str:
    """A worker's Celery node name: ``name`` where given, else ``pipeq-<kind>-<pid>@<host>`` (Celery fills in the
    host from ``%h``), unique among the workers of a host, so job records, Flower and ``celery inspect`` tell them
    apart and Celery warns of no duplicate node name."""
    return name or f"pipeq-{kind}-{os.getpid()}@%h"


def prefetch_count(settings: Settings) -> int:
    """Messages a worker holds unacked: one batch running, one being fetched, one accumulating, and slack."""
    largest = max(
        (model.max_batch_jobs for model in settings.models), default=ModelEntry.model_fields["max_batch_jobs"].default
    )
    return 4 * largest


WEBHOOK_UNACKED_KEYS = {
    "unacked_key": "pipeq.webhooks.unacked",
    "unacked_index_key": "pipeq.webhooks.unacked_index",
    "unacked_mutex_key": "pipeq.webhooks.unacked_mutex",
}
"""Where the webhook worker's unacked deliveries are kept: apart from the model queues' (kombu's default keys), so
that each has its own redelivery time."""


KEEPALIVES_PER_DEAD_AFTER = 6
"""How many times within ``dead_after_s`` a model worker touches what it holds, and the broker sweeps for it."""


def keepalive_interval_s(settings: Settings) -> float:
    """How often a model worker touches the messages it holds: ``dead_after_s`` of silence makes it dead."""
    return settings.dead_after_s / KEEPALIVES_PER_DEAD_AFTER


def redelivery_options(settings: Settings, webhooks: bool = False) -> dict[str, object]:
    """The broker options that say when an unacked message goes back to its queue.

    Model queues: after ``dead_after_s`` without a touch. A live worker touches what it holds every
    ``dead_after_s / 6``, so only a dead (or paused) one loses its jobs, within ``dead_after_s`` plus one sweep
    (every ``dead_after_s / 6``, at most 10 s). Webhook deliveries, kept alive the same way by the webhook worker
    (waiting retries included): after ``broker_visibility_timeout()``, under keys of their own."""
    visibility = settings.broker_visibility_timeout() if webhooks else settings.dead_after_s
    options: dict[str, object] = {
        "visibility_timeout": visibility,
        "unacked_restore_interval": max(1.0, min(10.0, visibility / KEEPALIVES_PER_DEAD_AFTER)),
        "unacked_restore_throttle": 1,
        # A worker killed while holding the restore lock must not block redelivery for kombu's 5 minutes.
        "unacked_mutex_expire": int(max(1, min(300, visibility // 2))),
    }
    if webhooks:
        options.update(WEBHOOK_UNACKED_KEYS)
    return options


PIPEQ_TRANSPORTS = {
    "redis": "pipeq.core.broker:Transport",
    "rediss": "pipeq.core.broker:Transport",
    "sentinel": "pipeq.core.broker:SentinelTransport",
}
"""The kombu transport of pipeq's that serves each Redis URL scheme."""


def claim_url_schemes() -> None:
    """Make kombu resolve ``redis://``, ``rediss://`` and ``sentinel://`` to pipeq's transports.

    A broker URL of several (``sentinel://a;sentinel://b``) is a list of alternates, and kombu's failover to the
    next one (``Connection.switch``) takes the transport from that URL's scheme, replacing the one Celery was
    configured with: a worker that failed over once would go on with kombu's stock transport, without the reliable
    fetch or the keep-alive, and lose the jobs it had just fetched when killed (the chaos soak lost jobs so)."""
    TRANSPORT_ALIASES.update(PIPEQ_TRANSPORTS)


def broker_transport(url: str) -> tuple[str, str | None, dict[str, object]]:
    """The URL Celery is given for broker ``url``, the kombu transport that serves it (None: Celery's choice) and
    that transport's options: pipeq's Redis transport for ``redis://`` and ``rediss://``, and its Sentinel variant
    for ``sentinel://`` (pipeq.core.redis_client), whose group name and sentinel password go in the options."""
    if is_sentinel_url(url):
        group = parse_sentinel_url(url)
        options: dict[str, object] = {"master_name": group.master_name}
        if group.sentinel_password:
            options["sentinel_kwargs"] = {"password": group.sentinel_password}
        return kombu_sentinel_url(url), PIPEQ_TRANSPORTS["sentinel"], options
    if url.startswith(("redis://", "rediss://")):
        return url, PIPEQ_TRANSPORTS["redis"], {}
    return url, None, {}


def make_celery(settings: Settings, webhooks: bool = False) -> Celery:
    """A Celery app for ``settings``: JSON serialisation, late acks, requeue on worker loss; ``webhooks``: the
    webhook worker's (its own redelivery time, see :func:`redelivery_options`)."""
    claim_url_schemes()
    broker_url, transport, transport_options = broker_transport(settings.broker_url)
    app = Celery("pipeq", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # job records are written by pipeq itself (pipeq.core.records)
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue="pipeq",
        worker_pool="solo",  # models run in the worker's own threads; nothing forks after CUDA starts
        worker_concurrency=1,
        worker_prefetch_multiplier=prefetch_count(settings),
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport=transport,
        broker_transport_options={**transport_options, **redelivery_options(settings, webhooks)},
    )
    if is_amqp_url(settings.broker_url):
        app.conf.update(celery_options(settings))  # RabbitMQ: quorum queues, confirms, heartbeat (pipeq.core.amqp)
    return app
