"""Publishing jobs to their queues: many at a time, as exactly the messages ``Celery.send_task`` writes.

``send_task`` costs about 220 µs a job on a 2-core machine (routing, declaring, building, one Redis round trip).
For pipeq's own Redis transport, :func:`publish_jobs` builds each message with the same parts (Celery's
``create_task_message``, kombu's ``prepare_message`` and ``basic_publish``, so the channel's own ``_put`` routes it:
a message of priority ``p`` goes to ``channel._q_for_pri(queue, p)``, and pipeq.core.broker's wake-up of a blocked
consumer comes along), has ``_put`` hand its Redis commands over instead of running them (kombu's publish-batch
hook, ``_publish_batch``, which a transport's ``_put`` must keep honouring), and runs a whole chunk's commands in
one MULTI/EXEC, consecutive pushes onto one list as one LPUSH of many values: about 45 µs a job
(``benchmarks/submit.py``). Redis runs all of a chunk, or none if it refuses a command as it is queued; a
connection lost while EXEC's reply is on its way leaves the outcome unknown (a job published twice is harmless).
Anything else (another transport, task-sent events on, a call from inside a running task) goes through
``send_task`` one job at a time; on RabbitMQ each publish waits for its confirm (pipeq.core.amqp).
"""

from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery
from kombu.common import maybe_declare
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps
from kombu.transport.redis import Channel as RedisChannel

from pipeq.core.amqp import MESSAGE_PRIORITIES, routed_queue
from pipeq.core.contract import Job
from pipeq.core.messaging import TASK_NAME, broker_priority, sent_now
from pipeq.core.replication import NotReplicated, ReplicaWait, run_transaction


class _Commands:
    """Collects the Redis commands kombu's Redis ``_put`` would run (its ``_publish_batch`` interface)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))


def send_one(app: Celery, producer: Any, job: Job, queue: str) -> None:
    """Publish ``job`` to ``queue`` with ``send_task``: the reference every faster path must match."""
    queue, priority = _destination(producer, job, queue)
    app.send_task(
        TASK_NAME,
        args=[job.model_dump(mode="json")],
        task_id=job.id,
        queue=queue,
        argsrepr=f"[job {job.id}]",  # Celery would repr the whole job for logs
        kwargsrepr="{}",
        producer=producer,
        headers=sent_now(),
        priority=priority,
    )


def _destination(producer: Any, job: Job, queue: str) -> tuple[str, int]:
    """The queue ``job`` is sent to and its message priority: on RabbitMQ a high job goes to the high sibling of
    ``queue`` (pipeq.core.amqp)."""
    if producer.connection.transport.driver_type == "amqp":
        return routed_queue(queue, job.priority), MESSAGE_PRIORITIES[job.priority]
    return queue, broker_priority(job.priority)


def publish_jobs(
    app: Celery,
    jobs: Sequence[tuple[Job, str]],
    published: Callable[[list[str]], None],
    wait: ReplicaWait | None = None,
) -> None:
    """Publish each job to its queue; ``published`` is told the ids of the jobs published, as they are (all at once
    on the pipelined path, where a failure publishes none). With ``wait``, then wait for Redis replicas to hold
    them (pipeq.core.replication): NotReplicated says they were published but fewer replicas have them."""
    if not jobs:
        return
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        if not _pipelines(app, channel):
            for job, queue in jobs:
                send_one(app, producer, job, queue)
                published([job.id])
            return
        for queue in dict.fromkeys(queue for _, queue in jobs):
            maybe_declare(app.amqp.queues[queue], channel)  # as send_task does (cached per connection)
        commands = _Commands()
        for job, queue in jobs:
            channel.basic_publish(
                _message(app, channel, job, queue), exchange="", routing_key=queue, _publish_batch=commands
            )
        with channel.conn_or_acquire() as client:
            acknowledged = run_transaction(client, _coalesced(commands.commands), wait)
        published([job.id for job, _ in jobs])
        if wait is not None and wait.missing(acknowledged):
            ids = [job.id for job, _ in jobs]
            raise NotReplicated(
                f"{len(ids)} job(s) were queued on the Redis primary, but only {wait.describe(acknowledged)}: a"
                " failover now could lose them. Check their status after it; resubmitting the same payload with the"
                " same id returns the existing job",
                ids,
                enqueued=True,
            )


def _coalesced(commands: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, list[Any]]]:
    """``commands`` with each run of LPUSHes onto one list as one LPUSH of all their values: the same list, in the
    same order, at a fraction of the cost."""
    merged: list[tuple[str, list[Any]]] = []
    for name, args in commands:
        if name == "lpush" and merged and merged[-1][0] == "lpush" and merged[-1][1][0] == args[0]:
            merged[-1][1].extend(args[1:])
        else:
            merged.append((name, list(args)))
    return merged


def _pipelines(app: Celery, channel: Any) -> bool:
    """Whether messages can be built here and pushed in one transaction, exactly as send_task would send them."""
    conf = app.conf
    return (
        isinstance(channel, RedisChannel)
        and not channel.global_keyprefix
        and conf.task_protocol == 2
        and conf.task_serializer == "json"
        and not conf.task_compression
        and not conf.task_send_sent_event
        and not conf.task_routes
        and app.current_worker_task is None  # send_task would give the message a parent
    )


def _message(app: Celery, channel: Any, job: Job, queue: str) -> dict[str, Any]:
    """The kombu message ``send_one`` would publish for ``job``, before the channel adds its delivery details."""
    argsrepr = f"[job {job.id}]"
    headers, properties, body, _ = app.amqp.create_task_message(
        job.id,
        TASK_NAME,
        [job.model_dump(mode="json")],
        {},
        reply_to=app.thread_oid,
        argsrepr=argsrepr,
        kwargsrepr="{}",
    )
    headers.update(sent_now())
    properties.update(argsrepr=argsrepr, kwargsrepr="{}")
    exchange = app.amqp.queues[queue].exchange
    properties["delivery_mode"] = maybe_delivery_mode(exchange.delivery_mode or app.conf.task_default_delivery_mode)
    content_type, content_encoding, payload = dumps(body, serializer="json")
    return channel.prepare_message(
        payload, broker_priority(job.priority), content_type, content_encoding, headers, properties
    )
