"""RabbitMQ as the broker (``broker_url = "amqp://..."``), job records still in Redis.

**Quorum queues.** Every queue pipeq declares, the model queues created on demand by name and the webhook queue
alike, is a quorum queue (replicated, durable); Celery then gives each consumer its own prefetch (quorum queues
have no global QoS).

**Publisher confirms.** A publish returns once RabbitMQ has taken the message (``confirm_publish``): a job the
producer saw published is in the queue, and a refused one raises.

**Dead workers.** RabbitMQ keeps an unacked message with its consumer until the connection closes, so a live worker
needs no keep-alive (pipeq's ``touch`` is Redis's). A killed worker's connection closes at once; a paused one stops
sending heartbeats, and RabbitMQ closes its connection two to three heartbeat intervals after it last heard from it:
with :func:`heartbeat_s` at a third of ``dead_after_s`` (3 s at least), its jobs go back to the queue within
``dead_after_s`` (9 s at least). A live worker sends something at least every quarter interval
(:data:`HEARTBEAT_CHECKS_PER_INTERVAL`), so one paused for up to 1.75 intervals (over half of ``dead_after_s``)
keeps its jobs.

**Priorities.** RabbitMQ 3.x quorum queues ignore message priorities, and 4.x ones know two levels (0-4 normal,
5 and above high). High jobs go to a sibling queue, ``<queue>.high`` (:func:`routed_queue`), which every worker of
``<queue>`` consumes too, with a prefetch of its own: a high job reaches a worker at once however long the backlog
of ``<queue>``, and the worker's micro-batcher, which orders what it holds by priority, runs it next. Low and normal
jobs share ``<queue>``, in order; the micro-batcher still runs a worker's normal jobs before its low ones. Messages
carry :data:`MESSAGE_PRIORITIES` all the same (low 0, normal 4, high 9: the right level on RabbitMQ 4).
"""

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from pipeq.config.settings import Settings

AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")
HIGH_QUEUE_SUFFIX = ".high"
MESSAGE_PRIORITIES = {"low": 0, "normal": 4, "high": 9}
"""The AMQP message priority of each job priority: RabbitMQ 4 quorum queues take 5 and above as high."""
HEARTBEATS_PER_DEAD_AFTER = 3
"""RabbitMQ closes a connection silent for two to three heartbeat intervals: three fit in ``dead_after_s``."""
MIN_HEARTBEAT_S = 3
"""Celery's start-up exchange with other workers (mingle, on unless ``--without-mingle``) reads replies until none
comes for 1 s, sending nothing meanwhile: RabbitMQ's own heartbeats, every half interval, must leave it that second,
or it waits until RabbitMQ closes the silent connection, again and again. So on RabbitMQ a worker is dead after
``max(dead_after_s, 9 s)``."""
HEARTBEAT_CHECKS_PER_INTERVAL = 8
"""How often per heartbeat interval a worker checks its connection; it sends a heartbeat at a check when it has
sent nothing for ``1 / 8`` of the interval, so it is never silent for more than a quarter of one."""


def is_amqp_url(url: str) -> bool:
    """Whether broker ``url`` names a RabbitMQ (AMQP 0-9-1) broker."""
    return urlsplit(url).scheme in AMQP_SCHEMES


def heartbeat_s(settings: Settings) -> int:
    """The AMQP heartbeat of a worker's connection, in whole seconds (the protocol's unit): a third of
    ``dead_after_s``, so that a worker silent for ``dead_after_s`` has lost its connection, and its jobs; at least
    :data:`MIN_HEARTBEAT_S`."""
    return max(MIN_HEARTBEAT_S, int(settings.dead_after_s / HEARTBEATS_PER_DEAD_AFTER))


def celery_options(settings: Settings) -> dict[str, Any]:
    """The Celery settings of a RabbitMQ broker (see the module docstring); none of the Redis transport's options
    (visibility timeout, unacked keys) apply."""
    return {
        "broker_transport": None,
        "broker_transport_options": {"confirm_publish": True},
        "broker_heartbeat": heartbeat_s(settings),
        "broker_heartbeat_checkrate": HEARTBEAT_CHECKS_PER_INTERVAL,
        "task_default_queue_type": "quorum",
        "task_create_missing_queue_type": "quorum",
        "worker_detect_quorum_queues": True,
    }


def high_queue(queue: str) -> str:
    """The sibling queue of ``queue`` that its high jobs go to."""
    return queue + HIGH_QUEUE_SUFFIX


def routed_queue(queue: str, priority: str) -> str:
    """The queue a job of ``priority`` bound for ``queue`` is sent to."""
    return high_queue(queue) if priority == "high" else queue


def sibling_queues(queues: Iterable[str]) -> list[str]:
    """The high queues a worker of ``queues`` consumes too."""
    return [high_queue(queue) for queue in queues if not queue.endswith(HIGH_QUEUE_SUFFIX)]


def redis_urls(settings: Settings) -> list[str]:
    """The Redis servers ``settings`` use: the record store, and the broker unless it is RabbitMQ."""
    urls = [settings.result_backend]
    if not is_amqp_url(settings.broker_url):
        urls.insert(0, settings.broker_url)
    return urls


def waiting_messages(connection: Any, queues: Sequence[str]) -> dict[str, int]:
    """Messages waiting (ready, not held by a consumer) in each of ``queues`` and its high sibling, read with a
    passive declare on kombu ``connection``; a queue not declared yet has none. RabbitMQ does not say, per queue,
    how many messages consumers hold unacked through AMQP (its management API does)."""
    counts: dict[str, int] = {}
    for queue in queues:
        counts[queue] = sum(_ready(connection, name) for name in (queue, high_queue(queue)))
    return counts


def _ready(connection: Any, queue: str) -> int:
    channel = connection.channel()
    try:
        return channel.queue_declare(queue, passive=True).message_count
    except connection.channel_errors:  # NOT_FOUND closes the channel
        return 0
    finally:
        if channel.is_open:
            channel.close()
