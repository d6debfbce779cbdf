"""The listing index: every job, and every job of each model, newest first.

Sorted sets in the records' Redis, of job ids scored by submission time (whole microseconds since the epoch, exact
in Redis's doubles): ``pipeq:jobs:all``, ``pipeq:jobs:model:<model>`` and, for jobs submitted through the HTTP API,
``pipeq:jobs:owner:<token>`` (a token lists only its own jobs). A job enters its sets when its record is created,
in the same pipeline and script (:meth:`pipeq.core.records.RecordStore.create`); a resubmission
of its id never moves it.

**Memory is bounded by result_ttl.** Each create trims the entries submitted more than the settings' ``result_ttl``
ago from the sets it writes and sets their EXPIRE to ``result_ttl`` (a set nobody wrote to for that long holds only
such entries). Entries whose record is gone (a job's shorter ``result_ttl``, a removed record) are skipped and
removed when a listing meets them. So the index holds at most the jobs submitted within the last ``result_ttl``,
and a listing shows those whose record still exists. A record lives ``result_ttl`` after its last write, so a job
that finished long after its submission may still be read by id once its entry is trimmed.

**Order and cursors.** Newest first; jobs of the same microsecond by id, descending. A cursor names the last entry
a page looked at (its score and id) and the next page starts strictly after it, so jobs submitted meanwhile (above
it) and entries removed meanwhile never shift a page: no job is repeated or skipped. Cursors are opaque: base64 of
the score and id, signed with HMAC-SHA256 under a random key kept in Redis (``pipeq:jobs:cursor-key``), and parsed
strictly, so a hand-made or damaged cursor is refused and nothing of one but an integer and a valid job id reaches
Redis.
"""

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import redis

from pipeq.core.contract import JOB_ID_PATTERN, InvalidJob

ALL_KEY = "pipeq:jobs:all"
MODEL_KEY_PREFIX = "pipeq:jobs:model:"
OWNER_KEY_PREFIX = "pipeq:jobs:owner:"
CURSOR_KEY = "pipeq:jobs:cursor-key"
MAX_TIES = 10_000
"""Most jobs of one microsecond a cursor resumes among (one clock cannot stamp nearly that many)."""
MAX_CURSOR_CHARS = 300
LOWEST = -(2**53)
HIGHEST = 2**53
"""Scores past every time a listing may name (Redis scores are exact integers within them)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR = re.compile(r"([A-Za-z0-9_-]{4,250})\.([0-9a-f]{32})")
_SCORE = re.compile(r"-?[0-9]{1,17}")
BAD_CURSOR = "cursor {cursor!r} is not one pipeq gave out (damaged, edited or cut short): start again without it"


class Position(NamedTuple):
    """Where an entry sits in the index: its score (microseconds) and job id."""

    score: int
    job_id: str


def score(at: datetime) -> int:
    """The index score of a time: whole microseconds since the epoch (exact, unlike ``timestamp()``)."""
    return (at - _EPOCH) // _MICROSECOND


def model_key(model: str) -> str:
    return f"{MODEL_KEY_PREFIX}{model}"


def owner_key(owner: str) -> str:
    return f"{OWNER_KEY_PREFIX}{owner}"


def keys_of(model: str, owner: str | None = None) -> tuple[str, ...]:
    """The sets a job of ``model`` (submitted by ``owner``, an API token, where given) is listed in."""
    return (ALL_KEY, model_key(model)) if owner is None else (ALL_KEY, model_key(model), owner_key(owner))


def trim(pipe: Any, keys: set[str] | list[str], horizon_s: int, at: datetime) -> None:
    """Queue, on ``pipe``, the removal of entries older than ``horizon_s`` from ``keys`` and their EXPIRE."""
    oldest = score(at) - horizon_s * 1_000_000
    for key in sorted(keys):
        pipe.zremrangebyscore(key, "-inf", f"({oldest}")
        pipe.expire(key, horizon_s)


class JobIndex:
    """Reads pages of the index and signs its cursors."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._secret: bytes | None = None

    def entries(self, key: str, low: int, high: int, after: Position | None, count: int) -> list[Position]:
        """Up to ``count`` entries of ``key`` scored from ``high`` down to ``low`` (inclusive), newest first,
        strictly after ``after`` where given."""
        if after is not None and after.score < low:
            return []
        pipe = self.redis.pipeline(transaction=True)  # one snapshot: ties and older entries agree
        if after is None or after.score > high:
            pipe.zrange(key, high, low, desc=True, byscore=True, offset=0, num=count, withscores=True)
            return [Position(int(s), member.decode()) for member, s in pipe.execute()[0]]
        pipe.zrange(key, after.score, after.score, desc=True, byscore=True, offset=0, num=MAX_TIES)
        pipe.zrange(key, f"({after.score}", low, desc=True, byscore=True, offset=0, num=count, withscores=True)
        ties, older = pipe.execute()
        mark = after.job_id.encode()
        found = [Position(after.score, member.decode()) for member in ties if member < mark]
        found += [Position(int(s), member.decode()) for member, s in older]
        return found[:count]

    def remove(self, job_ids: list[str], keys: list[str]) -> None:
        """Remove entries (of records that are gone) from ``keys``."""
        if job_ids:
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.zrem(key, *job_ids)
            pipe.execute()

    def cursor(self, position: Position) -> str:
        """The opaque cursor of ``position``."""
        text = base64.urlsafe_b64encode(f"{position.score}:{position.job_id}".encode()).rstrip(b"=").decode()
        return f"{text}.{self._sign(text)}"

    def position(self, cursor: Any) -> Position:
        """The position a cursor names; InvalidJob unless it is one :meth:`cursor` made."""
        shown = str(cursor)[:60]
        match = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) and len(cursor) <= MAX_CURSOR_CHARS else None
        if match is None or not hmac.compare_digest(self._sign(match[1]), match[2]):
            raise InvalidJob(BAD_CURSOR.format(cursor=shown))
        try:
            text = base64.urlsafe_b64decode(match[1] + "=" * (-len(match[1]) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidJob(BAD_CURSOR.format(cursor=shown)) from None
        number, _, job_id = text.partition(":")
        if not _SCORE.fullmatch(number) or not JOB_ID_PATTERN.fullmatch(job_id):
            raise InvalidJob(BAD_CURSOR.format(cursor=shown))
        return Position(int(number), job_id)

    def _sign(self, text: str) -> str:
        if self._secret is None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(CURSOR_KEY, secrets.token_bytes(32), nx=True)
            pipe.get(CURSOR_KEY)
            self._secret = pipe.execute()[1]
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:32]
