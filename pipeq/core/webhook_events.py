"""Webhook events: what a job's webhook is told, numbered in order, and how each is queued for delivery.

A job asks at submission for some of ``started``, ``progress`` and ``completed`` (default: ``completed``). Each
event becomes its own delivery message on the webhooks queue, naming the job, the event and its sequence number;
whoever delivers it (:mod:`pipeq.webhooks.delivery`) reads the URL from the job's record and the body from Redis,
never from the message. Sequence numbers count up per job from 1 (a Redis counter beside the records), so a
receiver can order the events and drop a stale progress that arrives after a later one.

* ``started`` and ``progress`` bodies are snapshots, stored when the event happens (a hash per job, kept as long
  as the job's record) and removed once delivered, so Redis holds only the events still on their way;
* ``completed`` is built from the final record when it is sent (succeeded, failed, canceled or expired). It may be
  queued more than once (a redelivered job, a cancel racing the worker); it is sent once.
"""

from collections.abc import Sequence
from typing import Any

from pipeq.core.messaging import sent_now

DELIVER_TASK = "pipeq.webhook"
"""The Celery task that delivers one webhook event."""

# KEYS[1]: the job's events hash. ARGV: ttl, then a body per event ('' for completed). Returns the sequence numbers.
_NUMBER_EVENTS = """
local numbers = {}
for i = 2, #ARGV do
  local sequence = redis.call('HINCRBY', KEYS[1], 'sequence', 1)
  if ARGV[i] ~= '' then redis.call('HSET', KEYS[1], tostring(sequence), ARGV[i]) end
  numbers[#numbers + 1] = sequence
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return numbers
"""


def wants(record: Any, event: str) -> bool:
    """Whether a job's record asks for its webhook to be told of ``event`` (started, progress, completed)."""
    return bool(record.webhook) and event in record.webhook_events


def events_key(job_id: str) -> str:
    """The hash of a job's event counter and stored event bodies."""
    return f"pipeq:webhooks:events:{job_id}"


def stored_body(redis: Any, job_id: str, sequence: int) -> bytes | None:
    """The body stored for a job's event ``sequence`` (started, progress), or None if it is gone."""
    return redis.hget(events_key(job_id), str(sequence))


def enqueue_events(
    app: Any, queue: str, redis: Any, ttl: int, events: Sequence[tuple[str, str, bytes | None]]
) -> list[int]:
    """Number and queue ``events``, each ``(job id, event, body)``: the body of a started or progress event as
    its receiver will get it, None for completed (built from the final record when sent). The sequence numbers
    given, in order."""
    if not events:
        return []
    script = redis.register_script(_NUMBER_EVENTS)
    pipe = redis.pipeline(transaction=False)
    for job_id, _, body in events:
        script(keys=[events_key(job_id)], args=[ttl, body or b""], client=pipe)
    numbers = [int(result[0]) for result in pipe.execute()]
    with app.producer_or_acquire() as producer:
        for (job_id, event, _), sequence in zip(events, numbers, strict=True):
            app.send_task(
                DELIVER_TASK,
                args=[job_id],
                kwargs={"event": event, "sequence": sequence},
                queue=queue,
                producer=producer,
                headers=sent_now(),
            )
    return numbers
