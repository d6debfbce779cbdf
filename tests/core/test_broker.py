"""The Redis transport: reliable fetch through in-flight lists, dead consumers' messages returned, one client."""

import time

import pytest
import redis
from kombu import Connection

from pipeq.core.broker import REGISTRY, SOURCES, Transport

QUEUE = "pipeq-broker-test"


@pytest.fixture
def broker(redis_url, redis_db):
    url = f"{redis_url}/{redis_db}"
    client = redis.Redis.from_url(url)
    with Connection(url, transport=Transport, transport_options={"visibility_timeout": 5}) as connection:
        yield connection, client
    client.close()


def test_a_channel_reuses_its_client_until_its_pool_changes(broker):
    connection, _ = broker
    channel = connection.default_channel
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
    channel._pool = None  # what a reconnection does
    with channel.conn_or_acquire() as third:
        assert third is not first


def test_a_delivered_message_is_unacked_and_no_longer_in_flight(broker):
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    queue.put({"hello": "world"})
    message = queue.get(timeout=5)
    assert message.payload == {"hello": "world"}
    [inflight] = client.zrange(REGISTRY, 0, -1)
    assert client.hget(SOURCES, inflight) == QUEUE.encode()
    assert client.llen(inflight) == 0
    assert client.hlen("unacked") == 1
    message.ack()
    assert client.hlen("unacked") == 0
    queue.close()


def test_messages_a_dead_consumer_had_in_flight_return_to_their_queue(broker):
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    queue.put({"n": 1})
    dead = f"{REGISTRY}.deadbeef.{QUEUE}"  # a consumer that took the message and was killed
    assert client.lmove(QUEUE, dead, "RIGHT", "LEFT") is not None
    client.zadd(REGISTRY, {dead: time.time() - 60})
    client.hset(SOURCES, dead, QUEUE)
    message = queue.get(timeout=5)  # this consumer's first heartbeat sweeps the dead one's list
    assert message.payload == {"n": 1}
    message.ack()
    assert not client.exists(dead)
    assert client.zscore(REGISTRY, dead) is None
    assert client.hget(SOURCES, dead) is None
    queue.close()


def test_a_live_consumers_in_flight_list_is_left_alone(broker):
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    live = f"{REGISTRY}.alive.{QUEUE}"
    client.lpush(live, b"not yet recorded as unacked")
    client.zadd(REGISTRY, {live: time.time()})
    client.hset(SOURCES, live, QUEUE)
    queue.put({"n": 2})
    assert queue.get(timeout=5).payload == {"n": 2}
    assert client.llen(live) == 1
    queue.close()


def test_touch_keeps_a_held_message_from_being_redelivered(broker):
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    queue.put({"n": "touched"})
    queue.put({"n": "forgotten"})
    touched, forgotten = queue.get(timeout=5), queue.get(timeout=5)
    long_ago = time.time() - 60  # both delivered a minute ago: past the visibility timeout of 5 s
    client.zadd("unacked_index", {touched.delivery_tag: long_ago, forgotten.delivery_tag: long_ago})
    qos = touched.channel.qos
    assert qos.touch([touched.delivery_tag, "never-delivered"]) == 1
    assert client.zscore("unacked_index", touched.delivery_tag) > time.time() - 5
    assert client.zscore("unacked_index", "never-delivered") is None  # XX: touching adds nothing
    qos.restore_visible(num=10, interval=1)
    assert client.llen(QUEUE) == 1  # only the untouched one went back to its queue
    assert client.hexists("unacked", touched.delivery_tag)
    redelivered = queue.get(timeout=5)
    assert redelivered.payload == {"n": "forgotten"}
    redelivered.ack()
    touched.ack()
    assert qos.touch([touched.delivery_tag]) == 0  # acked: gone for good
    assert client.zcard("unacked_index") == 0
    queue.close()
