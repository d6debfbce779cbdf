"""Watching one job's record from the API's event loop, without holding a thread: a change of state or progress
is seen within POLL_S, a final state at once (it is published on the job's channel)."""

import time
from collections.abc import AsyncIterator

import redis.asyncio

from pipeq.core.records import JobRecord, RecordStore

POLL_S = 0.25


async def watch(
    client: redis.asyncio.Redis, job_id: str, heartbeat_s: float | None = None, poll_s: float = POLL_S
) -> AsyncIterator[JobRecord | None]:
    """Yield the job's record now and each time it changes (its state, progress or anything else), until it is
    final; None (and stop) if the record is gone. A queued record past its deadline is yielded at every poll (for
    the caller to expire it). With ``heartbeat_s``, the record is yielded again, unchanged, after that long without
    a change (an event stream's keep-alive)."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(RecordStore.channel(job_id))
    try:
        last, record = None, None
        told = time.monotonic()
        while True:
            raw = await client.get(RecordStore.key(job_id))
            if raw is None:
                yield None
                return
            due = heartbeat_s is not None and time.monotonic() - told >= heartbeat_s
            if raw != last or due or (record.state == "queued" and record.past_deadline()):
                last, told = raw, time.monotonic()
                record = JobRecord.model_validate_json(raw)
                yield record
                if record.done:
                    return
            await pubsub.get_message(timeout=poll_s)
    finally:
        await pubsub.aclose()
