"""Each queue's backlog, read from the broker's Redis alone: no worker needs to run (an autoscaler scales from zero).

Per queue:

* **waiting**: the lengths of the queue's lists, one per priority (:func:`pipeq.core.broker.priority_lists`:
  normal is the queue's own name), told apart too. Producers ``LPUSH``, workers take from the right, so each
  list's oldest message is at index -1. A wake token (:data:`pipeq.core.broker.WAKE_TOKEN`) at the end of the
  normal list is no message and is not counted (one elsewhere, which is rare and brief, is);
* **held**: messages workers took and have not acked (prefetched, waiting for a micro-batch, running). kombu keeps
  them in the hash ``unacked`` (the webhook worker's: ``pipeq.webhooks.unacked``; field: delivery tag; value:
  JSON ``[message, exchange, routing_key]``); pipeq
  publishes to the default exchange, where the routing key is the queue. A message being fetched sits in one of
  pipeq's in-flight lists for a moment (:mod:`pipeq.core.broker`; ``pipeq.inflight.sources`` names the list it
  came from): those count as held too;
* **oldest waiting age**: seconds since the oldest waiting message (the oldest of any list) was sent: its
  ``pipeq_sent_at`` header (set where pipeq publishes), else its job's ``submitted_at``, else unknown (0). Never
  below 0.

Anything read may be garbage (whoever can write to the broker can write anything): a message that cannot be read
is waiting, of unknown age; an unacked entry that names no queue is held by none; a key of the wrong type is
empty. Only Redis itself failing (down, or slower than the client's socket timeout) raises.

The three parts are read one after another in the order a message moves (queue, in-flight list, unacked hash),
so a message moving meanwhile may be counted twice in one read, never missed. The hashes are scanned in pages,
at most :data:`MAX_SCANNED` entries of each per read: past that, held counts are a lower bound (a warning says
so). Unacked entries are read server-side down to their last :data:`TAIL_BYTES` bytes, so a scrape never copies
the messages' bodies.
"""

import base64
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily

from pipeq.config.settings import Settings
from pipeq.core.broker import SOURCES, WAKE_TOKEN, priority_lists, queue_of
from pipeq.core.messaging import SENT_AT_HEADER, WEBHOOK_UNACKED_KEYS
from pipeq.ops.metrics import BACKLOG_LABELS, BACKLOG_UP, QUEUE_HELD, QUEUE_OLDEST_AGE, QUEUE_WAITING

log = logging.getLogger(__name__)

"""The message header holding when a message was published (Unix time, a float)."""
UNACKED = "unacked"
"""kombu's hash of unacked messages (its Redis transport's default ``unacked_key``): the model queues'."""
UNACKED_KEYS = (UNACKED, WEBHOOK_UNACKED_KEYS["unacked_key"])
MAX_SCANNED = 100_000
"""Most entries read from each hash (unacked messages, in-flight lists) per read."""
SCAN_PAGE = 1000
"""Entries asked of Redis per scan step."""
MAX_MESSAGE_BYTES = 1024 * 1024
"""Larger waiting messages are not decoded: their age is unknown."""
TAIL_BYTES = 1024
"""How much of the end of an unacked entry is read: enough for its exchange and routing key."""
READ_TIMEOUT_S = 3.0
"""How long one Redis command of the backlog may take before the read gives up (the client:
:func:`pipeq.ops.http.impatient_redis`)."""

_UNACKED_TAILS = """
-- One HSCAN step of KEYS[1] from cursor ARGV[1]: the next cursor, then each field and the last ARGV[2] bytes
-- of its value (ARGV[3]: the COUNT hint).
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[3])
local tails = {}
local keep = tonumber(ARGV[2])
for i = 1, #page[2], 2 do
  tails[#tails + 1] = page[2][i]
  tails[#tails + 1] = string.sub(page[2][i + 1], -keep)
end
return {page[1], tails}
"""


@dataclass(frozen=True)
class QueueBacklog:
    """One queue's backlog: messages waiting (of them, how many high and low), messages held by workers, the oldest
    waiting one's age."""

    waiting: int = 0
    held: int = 0
    oldest_age_s: float = 0.0
    waiting_high: int = 0
    waiting_low: int = 0

    def waiting_by_priority(self) -> dict[str, int]:
        """Messages waiting by priority: high, normal, low."""
        normal = self.waiting - self.waiting_high - self.waiting_low
        return {"high": self.waiting_high, "normal": normal, "low": self.waiting_low}

    def as_json(self) -> dict[str, Any]:
        """What ``pipeq queues --json`` shows of the queue."""
        return {
            "waiting": self.waiting,
            "waiting_by_priority": self.waiting_by_priority(),
            "held": self.held,
            "oldest_age_s": self.oldest_age_s,
        }


def backlog_queues(settings: Settings, extra: Iterable[str] = ()) -> list[str]:
    """The queues whose backlog matters: every catalogue queue, the webhooks queue, then ``extra``; no repeats."""
    return list(dict.fromkeys([*settings.catalogue.queues(), settings.webhooks.queue, *extra]))


def read_backlog(
    client: redis.Redis, queues: Iterable[str], now: float | None = None, max_scanned: int = MAX_SCANNED
) -> dict[str, QueueBacklog]:
    """The backlog of each of ``queues`` (by name, in order), read from the broker's Redis through ``client``;
    ages are counted to ``now`` (default: the current time). RedisError when Redis cannot be read; garbage in it
    never raises (see the module docstring)."""
    names = list(dict.fromkeys(queues))
    waiting, oldest = _read_waiting(client, names)
    held: Counter[str] = Counter()
    _count_in_flight(client, names, held, max_scanned)
    _count_unacked(client, names, held, max_scanned)
    now = time.time() if now is None else now
    backlog = {}
    for name in names:
        total = sum(waiting[name].values())
        age = max((message_age(message, now) for message in oldest[name]), default=0.0) if total else 0.0
        backlog[name] = QueueBacklog(total, held[name], age, waiting[name]["high"], waiting[name]["low"])
    return backlog


def message_age(message: bytes | None, now: float) -> float:
    """Seconds from when a stored broker message was sent (see :func:`sent_at`) to ``now``; 0 when unknown."""
    sent = None if message is None else sent_at(message)
    return 0.0 if sent is None else max(0.0, now - sent)


def sent_at(message: bytes) -> float | None:
    """When a message, as kombu stores it in Redis, was sent (Unix time): its ``pipeq_sent_at`` header, else its
    pipeq job's ``submitted_at``; None when neither can be read (a foreign or garbage message, or one larger than
    :data:`MAX_MESSAGE_BYTES`)."""
    if len(message) > MAX_MESSAGE_BYTES:
        return None
    try:
        decoded = json.loads(message)
    except (ValueError, RecursionError):
        return None
    if not isinstance(decoded, dict):
        return None
    headers = decoded.get("headers")
    stamp = _unix_time(headers.get(SENT_AT_HEADER)) if isinstance(headers, dict) else None
    return stamp if stamp is not None else _submitted_at(decoded)


def _unix_time(value: Any) -> float | None:
    """``value`` as a Unix time if it is a plausible one (a positive finite number), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        stamp = float(value)
    except OverflowError:
        return None
    return stamp if math.isfinite(stamp) and stamp > 0 else None


def _submitted_at(message: dict) -> float | None:
    """The ``submitted_at`` of the pipeq job a Celery message carries (body: ``[args, kwargs, embed]``, args[0]
    the job), as a Unix time; None for anything else."""
    body = message.get("body")
    properties = message.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
    if not isinstance(body, str):
        return None
    try:
        raw = base64.b64decode(body, validate=True) if encoding == "base64" else body.encode()
        when = datetime.fromisoformat(json.loads(raw)[0][0]["submitted_at"])
        stamp = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    except (ValueError, TypeError, LookupError, ArithmeticError, RecursionError):
        return None
    return _unix_time(stamp)


def _read_waiting(client: redis.Redis, queues: Sequence[str]) -> tuple[dict[str, Counter[str]], dict[str, list[bytes]]]:
    """Each queue's lengths by priority and the oldest message of each of its lists, read at one instant (MULTI);
    a key of the wrong type is empty. A wake token at the end of a list is neither counted nor read as its oldest
    message: the one before it is, read just after."""
    lists = [(queue, priority, key) for queue in queues for priority, key in priority_lists(queue).items()]
    pipe = client.pipeline(transaction=True)
    for _, _, key in lists:
        pipe.llen(key)
        pipe.lindex(key, -1)
    replies = pipe.execute(raise_on_error=False)
    waiting: dict[str, Counter[str]] = {queue: Counter() for queue in queues}
    oldest: dict[str, list[bytes]] = {queue: [] for queue in queues}
    for index, (queue, priority, key) in enumerate(lists):
        length, message = replies[2 * index], replies[2 * index + 1]
        length = length if isinstance(length, int) else 0
        if message == WAKE_TOKEN:
            length -= 1
            message = _second_oldest(client, key) if length else None
        waiting[queue][priority] = length
        if isinstance(message, bytes):
            oldest[queue].append(message)
    return waiting, oldest


def _second_oldest(client: redis.Redis, key: str) -> bytes | None:
    """The entry before the last of the list ``key``, unless there is none or it is a wake token too."""
    try:
        message = client.lindex(key, -2)
    except redis.ResponseError:  # no longer a list
        return None
    return message if isinstance(message, bytes) and message != WAKE_TOKEN else None


def _count_in_flight(client: redis.Redis, queues: Sequence[str], held: Counter[str], max_scanned: int) -> None:
    """Add the messages in pipeq's in-flight lists to ``held``, by the queue they came from."""
    wanted = set(queues)
    lists: list[tuple[bytes, str]] = []
    for in_flight, source in _scan(client, SOURCES, max_scanned, client.hscan):
        queue = queue_of(_text(source))
        if queue in wanted:
            lists.append((in_flight, queue))
    if not lists:
        return
    pipe = client.pipeline(transaction=False)
    for in_flight, _ in lists:
        pipe.llen(in_flight)
    for (_, queue), length in zip(lists, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(length, int):
            held[queue] += length


def _count_unacked(client: redis.Redis, queues: Sequence[str], held: Counter[str], max_scanned: int) -> None:
    """Add the messages of kombu's unacked hashes (the model queues', the webhook worker's) to ``held``, by queue
    (each entry's routing key)."""
    script = client.register_script(_UNACKED_TAILS)

    def tails(key: str, cursor: int, count: int) -> tuple[int, dict[bytes, bytes]]:
        next_cursor, flat = script(keys=[key], args=[cursor, TAIL_BYTES, count])
        return int(next_cursor), dict(zip(flat[0::2], flat[1::2], strict=True))

    wanted = set(queues)
    for key in UNACKED_KEYS:
        for _, tail in _scan(client, key, max_scanned, tails):
            queue = routing_key(tail)
            if queue in wanted:
                held[queue] += 1


def _scan(client: redis.Redis, key: str, max_scanned: int, step: Any) -> Iterator[tuple[bytes, bytes]]:
    """The entries of the hash ``key``, each once, read ``step(key, cursor, count)`` at a time; at most
    ``max_scanned`` of them (a warning past that). A key of the wrong type has none."""
    seen: set[bytes] = set()
    cursor = 0
    while True:
        try:
            cursor, page = step(key, cursor, count=SCAN_PAGE)
        except redis.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            log.warning("the broker's %r is not a hash; its entries are left out of the backlog", key)
            return
        for field, value in page.items():
            if field in seen:  # a scan may return an entry twice while the hash grows
                continue
            if len(seen) >= max_scanned:
                log.warning(
                    "the broker's %r holds more than %d entries: the backlog read only the first %d, so held"
                    " counts are too low",
                    key,
                    max_scanned,
                    max_scanned,
                )
                return
            seen.add(field)
            yield field, value
        if cursor == 0:
            return


def routing_key(entry: bytes) -> str | None:
    """The routing key of an entry of kombu's unacked hash, ``[message, exchange, routing_key]`` as JSON, read
    from its end (the last :data:`TAIL_BYTES` bytes suffice); None when the entry does not end that way."""
    strings: list[bytes] = []
    end = len(entry.rstrip())
    if not entry[:end].endswith(b"]"):
        return None
    end -= 1
    for _ in range(2):  # the routing key, then the exchange, each preceded by a comma
        end = len(entry[:end].rstrip())
        start = _string_start(entry, end)
        if start is None:
            return None
        strings.append(entry[start:end])
        end = len(entry[:start].rstrip())
        if not entry[:end].endswith(b","):
            return None
        end -= 1
    try:
        key, exchange = (json.loads(text) for text in strings)
    except ValueError:
        return None
    return key if isinstance(key, str) and isinstance(exchange, str) and key else None


def _string_start(data: bytes, end: int) -> int | None:
    """Where the JSON string ending just before ``end`` (its closing quote at ``end - 1``) opens, or None."""
    if end < 2 or data[end - 1 : end] != b'"':
        return None
    search_end = end - 1
    while True:
        quote = data.rfind(b'"', 0, search_end)
        if quote < 0:
            return None
        backslashes = quote - len(data[:quote].rstrip(b"\\"))
        if backslashes % 2 == 0:  # not escaped: the opening quote
            return quote
        search_end = quote


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class BacklogCollector:
    """A prometheus_client collector of the backlog of ``queues``, read from Redis at every scrape.

    When Redis cannot be read, a scrape yields only ``pipeq_backlog_up 0`` (and the failure is logged); it
    never raises. The next scrape reads again.
    """

    def __init__(self, client: redis.Redis, queues: Iterable[str], where: str = "the broker's Redis") -> None:
        self.client = client
        self.queues = list(dict.fromkeys(queues))
        self.where = where
        self._failing: str | None = None

    def describe(self) -> list[GaugeMetricFamily]:
        """The metrics :meth:`collect` yields, without reading Redis (asked when the collector is registered)."""
        return [*_queue_families(), GaugeMetricFamily(*BACKLOG_UP)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The backlog gauges of each queue and ``pipeq_backlog_up 1``, or only ``pipeq_backlog_up 0``."""
        try:
            backlog = read_backlog(self.client, self.queues)
        except Exception as exc:
            self._failed(exc)
            yield GaugeMetricFamily(*BACKLOG_UP, value=0)
            return
        if self._failing is not None:
            log.info("the backlog is read from %s again", self.where)
            self._failing = None
        waiting, held, oldest = _queue_families()
        for queue, counts in backlog.items():
            waiting.add_metric([queue], counts.waiting)
            held.add_metric([queue], counts.held)
            oldest.add_metric([queue], counts.oldest_age_s)
        yield from (waiting, held, oldest, GaugeMetricFamily(*BACKLOG_UP, value=1))

    def problem(self) -> str | None:
        """A readiness check: None while Redis answers, else why the backlog cannot be read."""
        try:
            self.client.ping()
        except Exception as exc:
            return f"the backlog cannot be read from {self.where}: {type(exc).__name__}: {exc}"
        return None

    def _failed(self, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, redis.RedisError):
            log.exception("reading the backlog from %s failed", self.where)
        elif reason != self._failing:
            log.warning("cannot read the backlog from %s: %s", self.where, reason)
        self._failing = reason


def _queue_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    """Empty gauges of the waiting, held and oldest-age metrics, labelled by queue."""
    waiting, held, oldest = (
        GaugeMetricFamily(name, documentation, labels=list(BACKLOG_LABELS[name]))
        for name, documentation in (QUEUE_WAITING, QUEUE_HELD, QUEUE_OLDEST_AGE)
    )
    return waiting, held, oldest
