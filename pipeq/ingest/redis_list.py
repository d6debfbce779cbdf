"""Source: bucket notifications pushed onto a Redis list (MinIO's Redis target, "access" format)."""

import hashlib
import json
import logging
import threading
from datetime import UTC, datetime

import redis
from kombu.exceptions import OperationalError

from pipeq.core.redis_client import redis_client
from pipeq.ingest.events import MalformedEvent, parse_event
from pipeq.ingest.ingester import Ingester
from pipeq.ops import metrics

log = logging.getLogger("pipeq.ingest")

RETRY_SECONDS = 1.0
MAX_ATTEMPTS = 3
"""Tries of an entry whose jobs cannot be submitted (for a reason of its own) before it is parked."""
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError, OSError)
"""Failures that are no entry's fault (Redis or the broker out of reach): retried without counting."""


class RedisListSource:
    """Consumes the Redis list ``key`` (in ``redis_url``, default the broker's Redis), entry by entry.

    Each entry moves atomically to ``<key>:processing`` (BLMOVE) and is removed from there only after its jobs
    are submitted: entries an ingester left there when it died (or failed) are processed again first. An entry
    that is not a notification, or whose jobs fail to be submitted MAX_ATTEMPTS times, moves to ``<key>:parked``
    (JSON: the entry, the error, when, after how many attempts), so it never holds up the entries behind it.
    """

    def __init__(self, ingester: Ingester, key: str, redis_url: str | None = None, block: float = 1.0) -> None:
        self.ingester = ingester
        self.key = key
        self.processing = f"{key}:processing"
        self.parked = f"{key}:parked"
        self.attempts = f"{key}:attempts"  # hash: sha256 of an entry -> failed attempts so far
        self.block = block  # seconds one BLMOVE waits for an entry
        self.redis = redis_client(redis_url or ingester.settings.broker_url)

    def run(self, stop_event: threading.Event) -> None:
        """Consume entries until ``stop_event`` is set; on a failure, retry after RETRY_SECONDS."""
        while not stop_event.is_set():
            try:
                for raw in self.redis.lrange(self.processing, 0, -1):
                    self._process(raw)
                while not stop_event.is_set():
                    raw = self.redis.blmove(self.key, self.processing, self.block, "LEFT", "RIGHT")
                    if raw is not None:
                        self._process(raw)
            except Exception:
                log.exception("reading events from Redis list %s failed; retrying in %s s", self.key, RETRY_SECONDS)
                stop_event.wait(RETRY_SECONDS)

    def _process(self, raw: bytes) -> None:
        """Submit one entry's jobs and forget the entry; park it if it is malformed, or failed too often."""
        try:
            self.ingester.handle_event(parse_event(raw), "redis_list")
        except MalformedEvent as exc:
            metrics.ingest_events.labels("redis_list", "malformed").inc()
            self._park(raw, exc, 1)
            return
        except UNREACHABLE:
            raise
        except Exception as exc:
            attempts = self.redis.hincrby(self.attempts, _digest(raw), 1)
            if attempts < MAX_ATTEMPTS:
                raise
            self._park(raw, exc, attempts)
            return
        pipe = self.redis.pipeline()
        pipe.lrem(self.processing, 1, raw)
        pipe.hdel(self.attempts, _digest(raw))
        pipe.execute()

    def _park(self, raw: bytes, error: Exception, attempts: int) -> None:
        """Move an entry from the processing list to the parked list, with why."""
        log.error("parking an entry of %s in %s: %s: %.300r", self.key, self.parked, error, raw)
        parked = {
            "entry": raw.decode(errors="replace"),
            "error": f"{type(error).__name__}: {error}",
            "attempts": attempts,
            "parked_at": datetime.now(UTC).isoformat(),
        }
        pipe = self.redis.pipeline()
        pipe.rpush(self.parked, json.dumps(parked))
        pipe.lrem(self.processing, 1, raw)
        pipe.hdel(self.attempts, _digest(raw))
        pipe.execute()

    def close(self) -> None:
        self.redis.close()


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
