"""kombu's Redis transport, made safe for workers killed at any moment, and lighter per message.

**Reliable fetch.** Stock kombu takes a message with ``BRPOP`` and only then records it as unacked: a worker
killed between the two loses the message, since Redis already removed it from the queue. Here a message moves
atomically (``BLMOVE``) from its queue into the channel's own in-flight list, is delivered (which records it
as unacked, as before), and only then leaves the in-flight list. Each channel keeps a heartbeat in a registry;
any channel whose heartbeat is older than the visibility timeout is dead, and the next sweep (any worker, at
kombu's restore interval) moves its in-flight messages back to their queues. A message can thus be delivered
twice, never lost; pipeq's job records make the second delivery harmless.

Priorities are not used by pipeq, so every message of a queue lives in one list (``priority_steps = [0]``):
``BLMOVE`` watches one list, and with several queues a channel watches each in turn for a short while.

**One client per channel.** Stock kombu builds a new ``redis.Redis`` for every publish, delivery bookkeeping
and ack, which costs more than the command itself at pipeq's rates. The client is thread-safe and draws
connections from the channel's pool, so one serves them all; it is rebuilt when the pool is replaced.

**Keep-alive.** kombu redelivers an unacked message once its delivery time in ``unacked_index`` is older than
the visibility timeout, even when the worker holding it is alive and merely busy. :meth:`QoS.touch` moves a
held message's delivery time to now, so a worker that touches what it holds every fraction of the timeout
keeps its jobs however long they wait or run.
"""

import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import loads

REGISTRY = "pipeq.inflight"
"""Sorted set: in-flight list -> the last heartbeat of the channel that owns it."""
SOURCES = "pipeq.inflight.sources"
"""Hash: in-flight list -> the queue its messages came from."""
HEARTBEAT_SECONDS = 1.0
SHARED_WAIT_SECONDS = 0.05
"""How long a channel consuming several queues waits on each in turn."""

_RETURN_INFLIGHT = """
-- ARGV: 'older-than', a time (lists of channels silent since then), or 'lists', the lists themselves
local lists = {}
if ARGV[1] == 'older-than' then
  lists = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
else
  for i = 2, #ARGV do lists[#lists + 1] = ARGV[i] end
end
local moved = 0
for _, inflight in ipairs(lists) do
  local queue = redis.call('HGET', KEYS[2], inflight)
  if queue then
    while redis.call('LMOVE', inflight, queue, 'RIGHT', 'RIGHT') do moved = moved + 1 end
  end
  redis.call('DEL', inflight)
  redis.call('ZREM', KEYS[1], inflight)
  redis.call('HDEL', KEYS[2], inflight)
end
return moved
"""


class QoS(kombu_redis.QoS):
    """kombu's Redis ack emulation, with :meth:`touch` to keep held messages from being redelivered."""

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
    """A Redis channel with reliable fetch, a reused client and touchable messages (see the module docstring)."""

    QoS = QoS
    priority_steps = [0]  # noqa: RUF012 (kombu's own class attribute)
    _reused_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._channel_id = uuid.uuid4().hex
        self._inflight_lists: dict[str, str] = {}  # in-flight list -> its queue
        self._moving: tuple[str, str, str] | None = None  # queue, its list, the in-flight list
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

    def _inflight_for(self, queue_key: str) -> str:
        return f"{REGISTRY}.{self._channel_id}.{queue_key}"

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self.global_keyprefix:  # key prefixing is kombu's business: keep its own fetch
            return super()._brpop_start(timeout)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        queue = queues[0]
        queue_key = self._q_for_pri(queue, 0)
        inflight = self._inflight_for(queue_key)
        self._heartbeat(queue_key, inflight)
        if len(self.active_queues) > 1:
            timeout = SHARED_WAIT_SECONDS
        elif timeout is None:
            timeout = self.brpop_timeout
        self._moving = (queue, queue_key, inflight)
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command("BLMOVE", queue_key, inflight, "RIGHT", "LEFT", timeout or 0)
        return None

    def _brpop_read(self, **options: Any) -> bool:
        if self._moving is None:
            return super()._brpop_read(**options)
        queue, queue_key, inflight = self._moving
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if item is None:
                self._queue_cycle.rotate(queue)
                raise kombu_redis.Empty()
            self._queue_cycle.rotate(queue)
            try:
                self.connection._deliver(loads(kombu_redis.bytes_to_str(item)), queue)
            except BaseException:
                with self.conn_or_acquire() as client:  # not taken after all: back to its queue
                    client.pipeline().lrem(inflight, 1, item).rpush(queue_key, item).execute()
                raise
            with self.conn_or_acquire() as client:  # now recorded as unacked: leave the in-flight list
                client.lrem(inflight, 1, item)
            return True
        finally:
            self._moving = None
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _heartbeat(self, queue_key: str, inflight: str) -> None:
        """Refresh this channel's heartbeat (about once a second) and sweep dead channels' in-flight lists."""
        now = time.time()
        if inflight in self._inflight_lists and now - self._beat_at < HEARTBEAT_SECONDS:
            return
        self._inflight_lists[inflight] = queue_key
        self._beat_at = now
        with self.conn_or_acquire() as client:
            # Both, every time: a sweep may have taken a busy (silent) channel for dead and forgotten it.
            pipe = client.pipeline()
            pipe.zadd(REGISTRY, dict.fromkeys(self._inflight_lists, now))
            pipe.hset(SOURCES, mapping=self._inflight_lists)
            pipe.execute()
            if now - self._swept_at >= self.unacked_restore_interval:
                self._swept_at = now
                deadline = now - self.visibility_timeout
                returned = client.eval(_RETURN_INFLIGHT, 2, REGISTRY, SOURCES, "older-than", deadline)
                if returned:
                    kombu_redis.logger.warning("returned %d message(s) of dead consumers to their queues", returned)

    def close(self) -> None:
        if not self._inflight_lists or self.closed:
            return super().close()
        with self.conn_or_acquire() as client:  # closing drops the channel's connection details
            errors = self.connection_errors
        super().close()  # may finish a fetch in progress, through the in-flight list
        with suppress(*errors):  # unreachable: the heartbeat stops and a sweep elsewhere returns them
            client.eval(_RETURN_INFLIGHT, 2, REGISTRY, SOURCES, "lists", *self._inflight_lists)
        return None


class Transport(kombu_redis.Transport):
    Channel = Channel
