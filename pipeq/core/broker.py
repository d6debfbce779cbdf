"""kombu's Redis transport, made safe for workers killed at any moment, and lighter per message.

**Reliable fetch.** Stock kombu takes a message with ``BRPOP`` and only then records it as unacked: a worker
killed between the two loses the message, since Redis already removed it from the queue. Here a message moves
atomically (``LMOVE``, ``BLMOVE``) from its queue into the channel's own in-flight list, is delivered (which records
it as unacked, as before), and only then leaves the in-flight list. Each channel keeps a heartbeat in a registry;
any channel whose heartbeat is older than the visibility timeout is dead, and the next sweep (any worker, at
kombu's restore interval) moves its in-flight messages back to their queues. A message can thus be delivered
twice, never lost; pipeq's job records make the second delivery harmless.

**Priorities.** A queue keeps its messages in three lists (kombu's ``priority_steps = [0, 1, 2]``, named by
:data:`pipeq.core.messaging.BROKER_PRIORITIES`: normal in the queue's own list, high and low in ``queue + sep +
"1"`` and ``"2"``). Each channel reads a queue's high list first, then normal, then low, except that every 8th
fetch reads normal first (then low, then high) and every 64th low first (then normal, then high), so while high
messages keep coming normal still gets 7 fetches in 64 and low at least 1 (8 while normal is empty). An ordered
fetch is one Lua script that moves the first message found, in that order, into the in-flight list of the list it
came from: each list has its own, so a dead channel's messages return to their own list. While only normal
messages wait (or none), a channel fetches with ``BLMOVE`` on the normal list instead, blocking when it is empty
(for at most kombu's ``brpop_timeout``): as cheap as a queue without priorities, and an idle worker takes a new job
at once. A high or low message published, restored or returned from a dead channel puts :data:`WAKE_TOKEN` at the
end of the normal list that channels take from (one at a time): the channel that takes it drops it and fetches in
order until only normal messages are left again. A token is never delivered, and one left over is dropped when the
normal list is next read. With several queues a channel serves each in turn, blocking on each for a short while.
With ``global_keyprefix`` set, kombu's own fetch (``BRPOP``, lists in step order) and publish are used unchanged.

**One client per channel.** Stock kombu builds a new ``redis.Redis`` for every publish, delivery bookkeeping
and ack, which costs more than the command itself at pipeq's rates. The client is thread-safe and draws
connections from the channel's pool, so one serves them all; it is rebuilt when the pool is replaced.

**Keep-alive.** kombu redelivers an unacked message once its delivery time in ``unacked_index`` is older than
the visibility timeout, even when the worker holding it is alive and merely busy. :meth:`QoS.touch` moves a
held message's delivery time to now, so a worker that touches what it holds every fraction of the timeout
keeps its jobs however long they wait or run. That makes the timeout a dead-worker detector: model queues use
``dead_after_s`` (30 s) as theirs, so a worker killed or paused for longer loses its jobs to the others within it
and one sweep, where an untouched timeout must outlast the longest batch (pipeq.core.messaging).
"""

import hashlib
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads
from redis.exceptions import NoScriptError

from pipeq.core.messaging import BROKER_PRIORITIES

REGISTRY = "pipeq.inflight"
"""Sorted set: in-flight list -> the last heartbeat of the channel that owns it."""
SOURCES = "pipeq.inflight.sources"
"""Hash: in-flight list -> the list its messages came from (a queue's list of one priority)."""
HEARTBEAT_SECONDS = 1.0
SHARED_WAIT_SECONDS = 0.05
"""How long a channel consuming several queues waits on each in turn."""
SEP = kombu_redis.Channel.sep
"""What joins a queue's name and a priority step in the name of its list (kombu's default ``sep``)."""
WAKE_TOKEN = b"pipeq.wake"
"""Pushed onto an empty normal list when a message of another priority arrives, to wake a channel blocked on it;
never a message (those are JSON objects)."""

NORMAL, HIGH, LOW = (BROKER_PRIORITIES[name] for name in ("normal", "high", "low"))
HIGH_FIRST = (HIGH, NORMAL, LOW)
NORMAL_FIRST = (NORMAL, LOW, HIGH)
LOW_FIRST = (LOW, NORMAL, HIGH)
NORMAL_TURN = 8
"""Every this many fetches read normal first."""
LOW_TURN = 64
"""Every this many fetches read low first."""


def fetch_order(fetch_number: int) -> tuple[int, ...]:
    """The priority steps a channel's ``fetch_number``-th fetch (from 1) reads, in order (the module docstring)."""
    if fetch_number % LOW_TURN == 0:
        return LOW_FIRST
    if fetch_number % NORMAL_TURN == 0:
        return NORMAL_FIRST
    return HIGH_FIRST


def priority_lists(queue: str) -> dict[str, str]:
    """The Redis list of each priority (high, normal, low) of ``queue``."""
    return {
        name: queue if step == NORMAL else f"{queue}{SEP}{step}"
        for name, step in sorted(BROKER_PRIORITIES.items(), key=lambda item: HIGH_FIRST.index(item[1]))
    }


def queue_of(list_key: str) -> str:
    """The queue whose list ``list_key`` is (see :func:`priority_lists`)."""
    queue, sep, step = list_key.rpartition(SEP)
    return queue if sep and step.isdigit() else list_key


_FETCH = """
-- KEYS: n lists in the order to read them, then the in-flight list of each; ARGV[1]: the wake token.
-- Moves the first message found into its in-flight list, dropping wake tokens on the way; returns {its list's
-- position (from 1), the message, 1 if another list holds messages (else 0)}, or false when every list is empty.
local n = #KEYS / 2
for i = 1, n do
  local item = redis.call('LMOVE', KEYS[i], KEYS[n + i], 'RIGHT', 'LEFT')
  while item == ARGV[1] do
    redis.call('LPOP', KEYS[n + i])
    item = redis.call('LMOVE', KEYS[i], KEYS[n + i], 'RIGHT', 'LEFT')
  end
  if item then
    local others = 0
    for j = 1, n do
      if j ~= i and redis.call('LLEN', KEYS[j]) > 0 then others = 1 end
    end
    return {i, item, others}
  end
end
return false
"""
_FETCH_SHA = hashlib.sha1(_FETCH.encode()).hexdigest()  # what Redis names the script by

_WAKE = """
-- KEYS[1]: a queue's normal list; ARGV[1]: the wake token. Put at the end channels take from, unless one is there
-- already: the next blocking fetch takes it, and its channel fetches in order from then on.
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then redis.call('RPUSH', KEYS[1], ARGV[1]) end
"""

_RETURN_INFLIGHT = """
-- ARGV: 'older-than', a time (lists of channels silent since then), or 'lists', the lists themselves; last, the
-- wake token (pushed for the channels blocked on a queue whose high or low messages came back)
local lists = {}
if ARGV[1] == 'older-than' then
  lists = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
else
  for i = 2, #ARGV - 1 do lists[#lists + 1] = ARGV[i] end
end
local moved = 0
for _, inflight in ipairs(lists) do
  -- Its name says where it came from too, should the entry be gone (swept while its channel was cut off by a
  -- failover): a list is never dropped with messages in it.
  local queue = redis.call('HGET', KEYS[2], inflight) or string.match(inflight, '^pipeq%.inflight%.%x+%.(.+)$')
  if queue then
    local before = moved
    while redis.call('LMOVE', inflight, queue, 'RIGHT', 'RIGHT') do moved = moved + 1 end
    local normal = string.match(queue, '^(.*)\6\22%d+$')  -- a high or low list: wake its queue's channels
    if normal and moved > before and redis.call('LINDEX', normal, -1) ~= ARGV[#ARGV] then
      redis.call('RPUSH', normal, ARGV[#ARGV])
    end
  end
  redis.call('DEL', inflight)
  redis.call('ZREM', KEYS[1], inflight)
  redis.call('HDEL', KEYS[2], inflight)
end
return moved
"""


@dataclass(frozen=True)
class _Fetch:
    """A fetch in flight on a channel's connection: ``BLMOVE`` on the normal list (``blocking``) or the ordered
    fetch script over ``lists``, each with its in-flight list."""

    queue: str
    lists: tuple[str, ...]
    inflights: tuple[str, ...]
    blocking: bool


RESTORE_BATCH = 1000
"""Most messages one sweep returns to their queues (kombu's default is 10: a dead worker's 4 x max_batch_jobs jobs
would take dozens of sweeps)."""


class QoS(kombu_redis.QoS):
    """kombu's Redis ack emulation, with :meth:`touch` to keep held messages from being redelivered, and sweeps
    that return up to RESTORE_BATCH messages at once."""

    def restore_visible(self, start: int = 0, num: int | None = 10, interval: int = 10) -> None:
        super().restore_visible(start, None if num is None else max(num, RESTORE_BATCH), interval)  # None: all

    def touch(self, delivery_tags: Iterable[str]) -> int:
        """Set the delivery time of these unacked messages to now; returns how many were still unacked.

        ``ZADD XX`` only updates: a message already acked, or already restored, stays gone.
        """
        tags = list(delivery_tags)
        if not tags:
            return 0
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, dict.fromkeys(tags, time.time()), xx=True, ch=True)
            [changed] = pipe.execute()
        return int(changed)


class Channel(kombu_redis.Channel):
    """A Redis channel with reliable, priority-ordered fetch, a reused client and touchable messages (see the
    module docstring)."""

    QoS = QoS
    priority_steps = [NORMAL, HIGH, LOW]  # noqa: RUF012 (kombu's own class attribute)
    _reused_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._channel_id = uuid.uuid4().hex
        self._inflight_lists: dict[str, str] = {}  # in-flight list -> the list its messages came from
        self._fetching: _Fetch | None = None
        self._fetches = 0  # ordered fetches sent: fetch_order's count
        self._block_next = False  # the last ordered fetch found nothing: block on the normal list next
        self._script_loaded = False
        self._beat_at = 0.0
        self._swept_at = 0.0

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        reused = self._reused_client
        if reused is None or reused.connection_pool is not self.pool:
            reused = self._reused_client = self._create_client()
        yield reused

    # -- publishing --------------------------------------------------------------------------------------------

    def _put(self, queue: str, message: dict, **kwargs: Any) -> None:
        batch = kwargs.get("_publish_batch")
        super()._put(queue, message, **kwargs)
        if not self.global_keyprefix and self._step_of(message) != NORMAL:
            if batch is not None:
                batch.add("eval", _WAKE, 1, self._q_for_pri(queue, NORMAL), WAKE_TOKEN)
            else:
                with self.conn_or_acquire() as client:
                    client.eval(_WAKE, 1, self._q_for_pri(queue, NORMAL), WAKE_TOKEN)

    def _do_restore_message(
        self, payload: dict, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        if self.global_keyprefix or self._step_of(payload) == NORMAL:
            return
        try:
            queues = self._lookup(exchange, routing_key)
        except Exception:  # kombu's restore above logged it
            return
        for queue in queues:
            pipe.eval(_WAKE, 1, self._q_for_pri(queue, NORMAL), WAKE_TOKEN)

    def _step_of(self, message: dict) -> int:
        return self.priority(self._get_message_priority(message, reverse=False))

    # -- fetching ----------------------------------------------------------------------------------------------

    def _get(self, queue: str) -> dict:
        """One message for ``basic_get``, most urgent list first (not reliable: kombu's own ``RPOP``)."""
        if self.global_keyprefix:
            return super()._get(queue)
        with self.conn_or_acquire() as client:
            for step in HIGH_FIRST:
                key = self._q_for_pri(queue, step)
                item = client.rpop(key)
                while item == WAKE_TOKEN:
                    item = client.rpop(key)
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    return loads(kombu_redis.bytes_to_str(item))
            self._maybe_update_queues_expire(client, queue)
        raise kombu_redis.Empty()

    def _inflight_for(self, list_key: str) -> str:
        return f"{REGISTRY}.{self._channel_id}.{list_key}"

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self.global_keyprefix:  # key prefixing is kombu's business: keep its own fetch
            return super()._brpop_start(timeout)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        queue = queues[0]
        self._heartbeat(queue)
        if self._block_next:
            if len(self.active_queues) > 1:
                timeout = SHARED_WAIT_SECONDS
            elif timeout is None:
                timeout = self.brpop_timeout
            normal = self._q_for_pri(queue, NORMAL)
            fetch = _Fetch(queue, (normal,), (self._inflight_for(normal),), blocking=True)
            command: tuple[Any, ...] = ("BLMOVE", normal, fetch.inflights[0], "RIGHT", "LEFT", timeout or 0)
        else:
            if not self._script_loaded:
                with self.conn_or_acquire() as client:
                    client.script_load(_FETCH)
                self._script_loaded = True
            self._fetches += 1
            lists = tuple(self._q_for_pri(queue, step) for step in fetch_order(self._fetches))
            fetch = _Fetch(queue, lists, tuple(map(self._inflight_for, lists)), blocking=False)
            command = ("EVALSHA", _FETCH_SHA, 2 * len(lists), *lists, *fetch.inflights, WAKE_TOKEN)
        self._fetching = fetch
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command(*command)
        return None

    def _brpop_read(self, **options: Any) -> bool:
        fetch = self._fetching
        if fetch is None:
            return super()._brpop_read(**options)
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "BLMOVE" if fetch.blocking else "EVALSHA", **options
                )
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except NoScriptError:  # Redis restarted or flushed its scripts: load it again, fetch again
                self._script_loaded = False
                raise kombu_redis.Empty() from None
            return self._took(fetch, reply)
        finally:
            self._fetching = None
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _took(self, fetch: _Fetch, reply: Any) -> bool:
        """Deliver what ``fetch`` took (``reply``), or raise Empty and set what the next fetch does."""
        if fetch.blocking:
            if reply is None or reply == WAKE_TOKEN:  # nothing came, or another priority did: read in order next
                self._block_next = False
                if reply is None:
                    self._queue_cycle.rotate(fetch.queue)
                else:
                    with self.conn_or_acquire() as client:
                        client.lrem(fetch.inflights[0], 1, WAKE_TOKEN)
                raise kombu_redis.Empty()
            self._block_next = len(self.active_queues) == 1  # a wake token says when to read in order again
            position, item = 0, reply
        elif not reply:
            self._block_next = True
            raise kombu_redis.Empty()
        else:
            position, item = int(reply[0]) - 1, reply[1]
            # Only normal messages left: block on the normal list (one cheap command a message) until a token comes.
            self._block_next = (
                fetch.lists[position] == self._q_for_pri(fetch.queue, NORMAL)
                and not int(reply[2])
                and len(self.active_queues) == 1
            )
        source, inflight = fetch.lists[position], fetch.inflights[position]
        self._queue_cycle.rotate(fetch.queue)
        payload = loads(kombu_redis.bytes_to_str(item))
        # A delivery tag of its own for every delivery: kombu keeps a message's tag from its publish through every
        # restore, so the late ack of an earlier delivery would remove the unacked entry of this one, and were this
        # worker then killed, nothing would bring the job back (the chaos soak lost jobs so on Sentinel).
        payload.setdefault("properties", {})["delivery_tag"] = uuid.uuid4().hex
        try:
            self.connection._deliver(payload, fetch.queue)
        except BaseException:
            with self.conn_or_acquire() as client:  # not taken after all: back to its list
                client.pipeline().lrem(inflight, 1, item).rpush(source, item).execute()
            raise
        with self.conn_or_acquire() as client:  # now recorded as unacked: leave the in-flight list
            client.lrem(inflight, 1, item)
        return True

    # -- heartbeat and sweep -----------------------------------------------------------------------------------

    def _heartbeat(self, queue: str) -> None:
        """Refresh this channel's heartbeat (about once a second), registering the in-flight lists of ``queue``'s
        lists, and sweep dead channels' in-flight lists."""
        now = time.time()
        normal = self._q_for_pri(queue, NORMAL)
        if self._inflight_for(normal) in self._inflight_lists and now - self._beat_at < HEARTBEAT_SECONDS:
            return
        for step in self.priority_steps:
            source = self._q_for_pri(queue, step)
            self._inflight_lists[self._inflight_for(source)] = source
        self._beat_at = now
        with self.conn_or_acquire() as client:
            # Both, every time: a sweep may have taken a busy (silent) channel for dead and forgotten it.
            pipe = client.pipeline()
            pipe.zadd(REGISTRY, dict.fromkeys(self._inflight_lists, now))
            pipe.hset(SOURCES, mapping=self._inflight_lists)
            pipe.execute()
            if now - self._swept_at >= self.unacked_restore_interval:
                self._swept_at = now
                self.return_dead_inflight(client, now)

    def return_dead_inflight(self, client: Any = None, now: float | None = None) -> int:
        """Move the messages of channels silent for longer than the visibility timeout from their in-flight lists
        back to the lists they came from; returns how many moved."""
        deadline = (time.time() if now is None else now) - self.visibility_timeout
        with self.conn_or_acquire(client) as client:
            returned = client.eval(_RETURN_INFLIGHT, 2, REGISTRY, SOURCES, "older-than", deadline, WAKE_TOKEN)
        if returned:
            kombu_redis.logger.warning("returned %d message(s) of dead consumers to their queues", returned)
        return int(returned)

    def close(self) -> None:
        if not self._inflight_lists or self.closed:
            return super().close()
        with self.conn_or_acquire() as client:  # closing drops the channel's connection details
            errors = self.connection_errors
        super().close()  # may finish a fetch in progress, through the in-flight list
        with suppress(*errors):  # unreachable: the heartbeat stops and a sweep elsewhere returns them
            client.eval(_RETURN_INFLIGHT, 2, REGISTRY, SOURCES, "lists", *self._inflight_lists, WAKE_TOKEN)
        return None


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """:class:`Channel` on the primary of a Redis Sentinel group: the same reliable fetch, keep-alive and dead-channel
    sweep, with kombu's discovery of the primary (asked again after a failover closes the connections)."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
