"""What ingestion remembers to keep one job per object version: a bounded, expiring memory in Redis.

Each handled object version is remembered by a 16-byte digest (the SHA-256 of ``bucket/key@tag``, cut) in the set
of the time window it was handled in, ``pipeq:ingest:seen:<window>``. A window is 1/WINDOWS of the retention
(``ingest_seen_retention_s``, at least a second) and its set expires ``retention`` after the window ends; a
version counts as seen while any of the last WINDOWS + 1 windows' sets holds it. So a version is remembered for at
least the retention and at most one window longer, Redis holds what was handled within that time (about 80 bytes
a version, ``benchmarks/ingest_poll.py``), and the memory stays flat under a continuous stream.

The retention must outlast any redelivery (SQS keeps a message up to 14 days, the default retention); past it a
repeated announcement makes its job again, under the same job id (a no-op while that job's record exists).
Versions remembered in the set earlier releases kept for ever, ``pipeq:ingest:seen``, still count; that set is
given the retention as its lifetime.
"""

import hashlib
import time

import redis

PREFIX = "pipeq:ingest:seen:"
LEGACY_KEY = "pipeq:ingest:seen"
WINDOWS = 14

# Adds a digest (ARGV[1]) to the current window's set (KEYS[#KEYS - 1]) unless a window's set holds it, or the
# legacy set (KEYS[#KEYS]) holds the version's name (ARGV[3]); 1 if it was new. ARGV[2]: when the set expires.
_ADD = """
for i = 1, #KEYS - 1 do
  if redis.call('SISMEMBER', KEYS[i], ARGV[1]) == 1 then return 0 end
end
if redis.call('SISMEMBER', KEYS[#KEYS], ARGV[3]) == 1 then return 0 end
redis.call('SADD', KEYS[#KEYS - 1], ARGV[1])
redis.call('EXPIREAT', KEYS[#KEYS - 1], ARGV[2])
return 1
"""


def digest(seen: str) -> bytes:
    """The 16 bytes that stand for an object version (``ObjectJob.seen``)."""
    return hashlib.sha256(seen.encode()).digest()[:16]


class SeenVersions:
    """The object versions handled within the retention, in ``client`` (the records' Redis)."""

    def __init__(self, client: redis.Redis, retention_s: int) -> None:
        self.redis = client
        self.retention_s = retention_s
        self.window_s = max(1, retention_s // WINDOWS)
        self._add = client.register_script(_ADD)
        if client.ttl(LEGACY_KEY) == -1:  # an earlier release's set, kept for ever: let it expire
            client.expire(LEGACY_KEY, retention_s)

    def _windows(self) -> tuple[list[str], int]:
        """The keys of the windows' sets that may hold a remembered version, oldest first (the last is the current
        window's), and when the current one expires (Unix time)."""
        current = int(time.time()) // self.window_s
        keys = [f"{PREFIX}{window}" for window in range(current - WINDOWS, current + 1)]
        return keys, (current + 1) * self.window_s + self.retention_s

    def add(self, seen: str) -> bool:
        """Remember a version; whether it was new (not remembered before)."""
        windows, expires = self._windows()
        return bool(self._add(keys=[*windows, LEGACY_KEY], args=[digest(seen), expires, seen]))

    def missing(self, seens: list[str]) -> list[bool]:
        """For each version, whether it is not remembered."""
        if not seens:
            return []
        windows, _ = self._windows()
        digests = [digest(seen) for seen in seens]
        pipe = self.redis.pipeline(transaction=False)
        for key in windows:
            pipe.smismember(key, digests)
        pipe.smismember(LEGACY_KEY, seens)
        found = pipe.execute()
        return [not any(column) for column in zip(*found, strict=True)]

    def mark(self, seens: list[str]) -> None:
        """Remember versions (already remembered ones too)."""
        if seens:
            windows, expires = self._windows()
            pipe = self.redis.pipeline(transaction=False)
            pipe.sadd(windows[-1], *[digest(seen) for seen in seens])
            pipe.expireat(windows[-1], expires)
            pipe.execute()
