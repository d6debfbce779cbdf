"""RabbitMQ as the broker in tests: settings whose queues are this test's own on the session's node (queues are
not emptied between tests, so each test names its own), and what the node holds."""

import uuid
from pathlib import Path

from kombu import Connection

from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import Settings, Webhooks
from pipeq.core.amqp import high_queue, waiting_messages
from tests.support.settings import make_settings


def rabbitmq_settings(
    amqp_url: str,
    redis_url: str,
    s3_endpoint: str,
    models: dict[str, Path],
    db: int,
    batch: dict | None = None,
    **overrides,
) -> Settings:
    """Settings with RabbitMQ as the broker and records in Redis db ``db + 1``; every model on one queue of this
    test's own (``.models[0].queue``), with ``batch`` (catalogue fields such as max_batch_jobs) applied, and a
    webhooks queue of its own."""
    tag = uuid.uuid4().hex[:8]
    overrides.setdefault("webhooks", Webhooks(queue=f"webhooks-{tag}"))
    settings = make_settings(redis_url, s3_endpoint, models, db=db, broker_url=amqp_url, **overrides)
    update = {"queue": f"jobs-{tag}", **(batch or {})}
    entries = [ModelEntry(**entry.model_copy(update=update).model_dump()) for entry in settings.models]
    return settings.model_copy(update={"models": entries})


def ready_messages(settings: Settings, queue: str) -> dict[str, int]:
    """Messages waiting in ``queue`` and in its high sibling, not held by any consumer."""
    with Connection(settings.broker_url) as connection:
        total = waiting_messages(connection, [queue])[queue]
        high = waiting_messages(connection, [high_queue(queue)])[high_queue(queue)]
    return {"queue": total - high, "high": high}


def queue_type(amqp_url: str, queue: str) -> str:
    """Whether ``queue`` is a quorum or a classic queue: RabbitMQ refuses to redeclare a queue with another type
    (PRECONDITION_FAILED), and changes nothing."""
    with Connection(amqp_url) as connection:
        for kind in ("quorum", "classic"):
            channel = connection.channel()
            try:
                channel.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": kind})
                return kind
            except connection.channel_errors as exc:
                if "inequivalent arg 'x-queue-type'" not in str(exc):
                    raise
            finally:
                if channel.is_open:
                    channel.close()
    raise AssertionError(f"queue {queue} is neither quorum nor classic")
