"""Per-token limits, kept in the records' Redis so that every API replica enforces the same ones: a submission rate
(jobs per second with a burst, a token bucket), a request rate, and a cap on a token's jobs not yet final."""

from datetime import datetime

import redis

from pipeq.api.problems import Problem, too_many
from pipeq.core import job_index
from pipeq.core.records import FINAL_STATES, RecordStore

RATE_PREFIX = "pipeq:api:rate:"
ACTIVE_PREFIX = "pipeq:api:active:"
PRUNE_BATCH = 500
PRUNE_BATCHES = 4
"""A request over the queued cap first looks at up to PRUNE_BATCHES x PRUNE_BATCH of the token's oldest jobs for
ones that have ended meanwhile (a bounded cost, paid only at the cap)."""
QUEUED_RETRY_S = 5

# A token bucket: ARGV rate (per s), burst, cost. Takes ``cost`` tokens and returns 0, or returns how many seconds
# until ``cost`` tokens are there (nothing taken). Redis's own clock, so every replica agrees.
_TAKE = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1e6
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(stored[1]) or burst
local at = tonumber(stored[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
if tokens < cost then return tostring((cost - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - cost), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return 0
"""

# Reserves places for job ids in a token's set of jobs not yet final, unless that would take it past ARGV[1].
# ARGV[2]: their score (submission time), ARGV[3]: the set's lifetime; ARGV[4...]: the ids. Returns the ids that
# were not in the set yet (now reserved), or {-1, size} past the cap.
_RESERVE = """
local fresh = {}
for i = 4, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then table.insert(fresh, ARGV[i]) end
end
local size = redis.call('ZCARD', KEYS[1])
if size + #fresh > tonumber(ARGV[1]) then return {-1, size} end
for _, id in ipairs(fresh) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return fresh
"""


class Limits:
    """Rate limits and the queued cap, per token (``owner``)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.redis: redis.Redis = store.redis
        self._take = self.redis.register_script(_TAKE)
        self._reserve = self.redis.register_script(_RESERVE)

    def take(self, owner: str, what: str, rate: float, burst: int, cost: int = 1) -> None:
        """Take ``cost`` from the token's ``what`` bucket; Problem 429 with Retry-After when it is empty."""
        if cost > burst:
            raise Problem(
                429,
                "rate-limited",
                f"{cost} {what} at once exceed this token's burst of {burst}: send at most {burst} per request",
            )
        wait = float(self._take(keys=[f"{RATE_PREFIX}{what}:{owner}"], args=[rate, burst, cost]))
        if wait > 0:
            raise too_many(
                f"token {owner!r} is over its rate of {rate:g} {what} per second (burst {burst}): retry after"
                f" {wait:.1f} s",
                wait,
            )

    def reserve(self, owner: str, job_ids: list[str], cap: int, at: datetime) -> list[str]:
        """Count ``job_ids`` among the token's jobs not yet final; the ids newly counted (give them back with
        :meth:`release` if their submission fails). Problem 429 when that would make more than ``cap``."""
        key = f"{ACTIVE_PREFIX}{owner}"
        args = [cap, job_index.score(at), self.store.ttl, *job_ids]
        for attempt in range(2):
            reserved = self._reserve(keys=[key], args=args)
            if not reserved or reserved[0] != -1:
                return [job_id.decode() for job_id in reserved]
            if attempt == 0 and not self._prune(key):
                break
        raise too_many(
            f"token {owner!r} has {reserved[1]} jobs not yet final, and may have at most {cap} (its max_queued):"
            " wait for some to end, or cancel some",
            QUEUED_RETRY_S,
        )

    def release(self, owner: str, job_ids: list[str]) -> None:
        if job_ids:
            self.redis.zrem(f"{ACTIVE_PREFIX}{owner}", *job_ids)

    def _prune(self, key: str) -> bool:
        """Drop the token's oldest jobs that have ended (or whose records are gone) from its set; whether any were."""
        pruned = False
        offset = 0
        for _ in range(PRUNE_BATCHES):
            ids = [job_id.decode() for job_id in self.redis.zrange(key, offset, offset + PRUNE_BATCH - 1)]
            if not ids:
                break
            states = self.store.states(ids)
            ended = [
                job_id for job_id, state in zip(ids, states, strict=True) if state is None or state in FINAL_STATES
            ]
            if ended:
                self.redis.zrem(key, *ended)
                pruned = True
            offset += len(ids) - len(ended)
        return pruned
