"""kombu's Redis transport with one reusable Redis client per channel.

Stock kombu builds a new ``redis.Redis`` object for every publish, delivery bookkeeping and ack
(``Channel.conn_or_acquire``), which costs more than the Redis command itself at pipeq's message rates. The
client is thread-safe and draws connections from the channel's pool, so one per channel serves them all;
it is rebuilt when the channel replaces its pool (after a reconnection).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _reused_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        reused = self._reused_client
        if reused is None or reused.connection_pool is not self.pool:
            reused = self._reused_client = self._create_client()
        yield reused


class Transport(kombu_redis.Transport):
    Channel = Channel
