"""Deliveries that gave up, kept in Redis until ``pipeq webhooks redeliver`` queues them again."""

import json
from datetime import UTC, datetime
from typing import Any

import redis

FAILED_KEY = "pipeq:webhooks:failed"
"""Hash: job id -> JSON {id, url, attempts, last_error, failed_at}."""
FAILED_ORDER_KEY = "pipeq:webhooks:failed:order"
"""Sorted set: job ids by the unix time their delivery failed."""


class DeadLetters:
    """Deliveries that gave up, in Redis: a hash of entries and a sorted set keeping their order."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def add(self, job_id: str, url: str, attempts: int, error: str) -> dict[str, Any]:
        """Record that the delivery of ``job_id`` to ``url`` gave up (replacing an earlier entry); the entry."""
        failed = datetime.now(UTC)
        entry = {"id": job_id, "url": url, "attempts": attempts, "last_error": error, "failed_at": failed.isoformat()}
        pipe = self.redis.pipeline()
        pipe.hset(FAILED_KEY, job_id, json.dumps(entry))
        pipe.zadd(FAILED_ORDER_KEY, {job_id: failed.timestamp()})
        pipe.execute()
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest failure first."""
        ids = self.redis.zrange(FAILED_ORDER_KEY, 0, -1)
        if not ids:
            return []
        return [json.loads(raw) for raw in self.redis.hmget(FAILED_KEY, ids) if raw]

    def take(self, job_id: str) -> dict[str, Any] | None:
        """Remove and return a job's entry (None if there is none)."""
        pipe = self.redis.pipeline()
        pipe.hget(FAILED_KEY, job_id)
        pipe.hdel(FAILED_KEY, job_id)
        pipe.zrem(FAILED_ORDER_KEY, job_id)
        raw, removed, _ = pipe.execute()
        return json.loads(raw) if removed else None
