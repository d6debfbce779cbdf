"""Source: bucket notifications pushed onto a Redis list (MinIO's Redis target, "access" format)."""

import logging
import threading

import redis

from pipeq.ingest.events import MalformedEvent, parse_event
from pipeq.ingest.ingester import Ingester

log = logging.getLogger("pipeq.ingest")

RETRY_SECONDS = 1.0


class RedisListSource:
    """Consumes the Redis list ``key`` (in ``redis_url``, default the broker's Redis), entry by entry.

    Each entry moves atomically to ``<key>:processing`` (BLMOVE) and is removed from there only after its jobs
    are submitted: entries an ingester left there when it died (or failed) are processed again first.
    """

    def __init__(self, ingester: Ingester, key: str, redis_url: str | None = None, block: float = 1.0) -> None:
        self.ingester = ingester
        self.key = key
        self.processing = f"{key}:processing"
        self.block = block  # seconds one BLMOVE waits for an entry
        self.redis = redis.Redis.from_url(redis_url or ingester.settings.broker_url)

    def run(self, stop_event: threading.Event) -> None:
        """Consume entries until ``stop_event`` is set; on a Redis error, retry after RETRY_SECONDS."""
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
        try:
            self.ingester.handle_event(parse_event(raw))
        except MalformedEvent as exc:
            log.error("dropping an entry of %s: %s: %.300r", self.processing, exc, raw)
        self.redis.lrem(self.processing, 1, raw)

    def close(self) -> None:
        self.redis.close()
