"""The Redis transport: reliable fetch through in-flight lists, dead consumers' messages returned, one client,
priorities read in order without starving the lower ones."""

import threading
import time

import pytest
import redis
from kombu import Connection, Queue
from kombu.utils.json import loads

from pipeq.core.broker import REGISTRY, SOURCES, WAKE_TOKEN, Transport, priority_lists
from pipeq.core.messaging import BROKER_PRIORITIES
from tests.support.waiting import wait_until

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
    sources = {source.decode(): inflight for inflight, source in client.hgetall(SOURCES).items()}
    assert set(sources) == set(priority_lists(QUEUE).values())  # one in-flight list per list of the queue
    assert sorted(client.zrange(REGISTRY, 0, -1)) == sorted(sources.values())
    assert not any(client.llen(inflight) for inflight in sources.values())
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


def test_one_sweep_returns_every_message_a_dead_worker_held(broker):
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    for n in range(150):  # more than kombu's 10 a sweep: a dead worker holds up to 4 x max_batch_jobs
        queue.put({"n": n})
    held = [queue.get(timeout=5) for _ in range(150)]
    client.zadd("unacked_index", {message.delivery_tag: time.time() - 60 for message in held})  # silent a minute
    held[0].channel.qos.restore_visible(num=10, interval=1)  # as kombu calls it
    assert client.llen(QUEUE) == 150 and client.hlen("unacked") == 0
    queue.close()


# -- priorities ------------------------------------------------------------------------------------------------


def put(queue, priority: str, **payload) -> None:
    queue.put({"priority": priority, **payload}, priority=BROKER_PRIORITIES[priority])


def take(queue, count: int) -> list[dict]:
    """The payloads of the next ``count`` messages the consumer takes, each acked."""
    payloads = []
    for _ in range(count):
        message = queue.get(timeout=5)
        payloads.append(message.payload)
        message.ack()
    return payloads


def waiting(client: redis.Redis, name: str) -> list[dict]:
    """The messages waiting in ``QUEUE``'s list of priority ``name``, oldest first: their properties (a wake token
    is no message)."""
    items = reversed(client.lrange(priority_lists(QUEUE)[name], 0, -1))
    return [loads(item)["properties"] for item in items if item != WAKE_TOKEN]


def test_messages_wait_in_the_list_of_their_priority(broker):
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    for name in ("normal", "high", "low", "high"):
        put(queue, name)
    lists = priority_lists(QUEUE)
    assert lists["normal"] == QUEUE
    assert [len(waiting(client, name)) for name in ("high", "normal", "low")] == [2, 1, 1]
    for name in ("high", "normal", "low"):
        assert {message["priority"] for message in waiting(client, name)} == {BROKER_PRIORITIES[name]}
    queue.close()


def test_high_goes_first_yet_normal_and_low_get_their_turns(broker):
    connection, _ = broker
    queue = connection.SimpleQueue(QUEUE)
    for i in range(100):
        put(queue, "normal", n=i)
    for i in range(200):
        put(queue, "high", n=i)
    for i in range(5):
        put(queue, "low", n=i)
    taken = take(queue, 128)
    names = [payload["priority"] for payload in taken]
    # Every 8th fetch reads normal first, every 64th low first; all others high first.
    assert [i for i, name in enumerate(names, 1) if name == "normal"] == [i for i in range(8, 129, 8) if i % 64]
    assert [i for i, name in enumerate(names, 1) if name == "low"] == [64, 128]
    for name in ("high", "normal", "low"):  # each list first in, first out
        numbers = [payload["n"] for payload in taken if payload["priority"] == name]
        assert numbers == list(range(len(numbers)))
    queue.close()


def test_low_gets_the_turns_of_normal_while_normal_is_empty(broker):
    connection, _ = broker
    queue = connection.SimpleQueue(QUEUE)
    for i in range(30):
        put(queue, "high", n=i)
    for i in range(3):
        put(queue, "low", n=i)
    names = [payload["priority"] for payload in take(queue, 24)]
    assert [i for i, name in enumerate(names, 1) if name == "low"] == [8, 16, 24]
    queue.close()


def test_a_dead_channels_messages_return_to_the_list_of_their_priority(broker):
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    for name in ("normal", "high", "low"):
        put(queue, name)
    for key in priority_lists(QUEUE).values():  # a consumer took one message of each list and was killed
        dead = f"{REGISTRY}.deadbeef.{key}"
        assert client.lmove(key, dead, "RIGHT", "LEFT") is not None
        client.zadd(REGISTRY, {dead: time.time() - 60})
        client.hset(SOURCES, dead, key)
    assert connection.default_channel.return_dead_inflight() == 3
    for name in ("high", "normal", "low"):
        assert [message["priority"] for message in waiting(client, name)] == [BROKER_PRIORITIES[name]]
    assert not client.keys(f"{REGISTRY}.deadbeef.*")
    queue.close()


def test_an_unacked_message_is_restored_to_the_list_of_its_priority(broker):
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    put(queue, "low")
    held = queue.get(timeout=5)
    client.zadd("unacked_index", {held.delivery_tag: time.time() - 60})  # past the visibility timeout
    held.channel.qos.restore_visible(num=10, interval=1)
    assert [message["priority"] for message in waiting(client, "low")] == [BROKER_PRIORITIES["low"]]
    again = queue.get(timeout=5)
    assert again.payload == {"priority": "low"} and again.delivery_info["redelivered"]
    again.ack()
    queue.close()


def test_an_idle_consumer_takes_a_high_or_low_message_at_once(broker, redis_url, redis_db):
    connection, client = broker
    producer = connection.SimpleQueue(QUEUE)
    arrived: dict[str, float] = {}
    failed: list[BaseException] = []

    def consume() -> None:
        try:
            with Connection(f"{redis_url}/{redis_db}", transport=Transport) as own:
                own.default_channel.brpop_timeout = 60  # unwoken, a blocked fetch would wait a minute
                queue = own.SimpleQueue(QUEUE)
                for _ in range(2):
                    message = queue.get(timeout=30)
                    arrived[message.payload["priority"]] = time.monotonic()
                    message.ack()
                queue.close()
        except BaseException as exc:
            failed.append(exc)

    def blocked() -> bool:
        clients = client.client_list()
        return any(entry.get("cmd") == "blmove" and entry.get("db") == str(redis_db) for entry in clients)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    for name in ("high", "low"):
        wait_until(blocked, 10, message="the consumer never blocked on its queue")
        sent = time.monotonic()
        put(producer, name)
        wait_until(lambda name=name: name in arrived or failed, 10, message=f"the {name} message never arrived")
        assert not failed, failed
        assert arrived[name] - sent < 5  # far below the blocked fetch's 60 s: the consumer was woken
    consumer.join(10)
    producer.close()


def test_wake_tokens_never_reach_a_consumer(broker):
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    put(queue, "high", n=0)  # onto an empty queue: wakes whoever blocks on its normal list
    assert client.lrange(QUEUE, 0, -1) == [WAKE_TOKEN]
    sent = [("low", 1), ("normal", 2), ("high", 3), ("low", 4)]
    for name, n in sent:
        put(queue, name, n=n)
    assert sorted(payload["n"] for payload in take(queue, 5)) == [0, 1, 2, 3, 4]
    with pytest.raises(queue.Empty):
        queue.get(timeout=0.5)
    assert not any(client.exists(key) for key in priority_lists(QUEUE).values())  # no token left behind
    put(queue, "low", n=5)
    put(queue, "normal", n=6)
    by_get = Queue(QUEUE)(connection.default_channel)  # basic_get: kombu's plain RPOP, most urgent list first
    assert [by_get.get().payload["n"] for _ in range(2)] == [6, 5]
    assert by_get.get() is None
    queue.close()


def test_a_high_message_overtakes_normal_ones_being_taken_one_by_one(broker):
    """While only normal messages wait, a consumer takes them with a plain blocking move (no script); a high message
    published meanwhile puts a wake token where the consumer takes from, so it is the very next one taken."""
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    for i in range(50):
        put(queue, "normal", n=i)
    take(queue, 5)
    assert connection.default_channel._block_next  # only normal messages: blocking moves
    put(queue, "high", n=100)
    put(queue, "high", n=101)
    assert client.lindex(QUEUE, -1) == WAKE_TOKEN and client.lrange(QUEUE, 0, -1).count(WAKE_TOKEN) == 1
    taken = [(payload["priority"], payload["n"]) for payload in take(queue, 4)]
    assert taken == [("high", 100), ("high", 101), ("normal", 5), ("normal", 6)]
    assert connection.default_channel._block_next  # back to blocking moves once only normal ones are left
    queue.close()


def test_a_closing_channel_returns_its_in_flight_messages_whose_entries_were_swept(broker):
    """After a failover the new primary may lack the entries saying where a live channel's in-flight lists came
    from (swept while the channel was cut off): closing it returns their messages all the same, by the lists' names;
    it used to drop them (the chaos soak lost 10 jobs of 6,000 so)."""
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    put(queue, "normal", n=0)
    queue.get(timeout=5).ack()  # the channel's first fetch registers its in-flight lists
    channel = queue.channel
    for name in ("normal", "high", "low"):
        put(queue, name)
    for key in priority_lists(QUEUE).values():  # taken, then the entries swept on the new primary
        inflight = channel._inflight_for(key)
        assert client.lmove(key, inflight, "RIGHT", "LEFT") is not None
        client.hdel(SOURCES, inflight)
        client.zrem(REGISTRY, inflight)
    queue.close()
    channel.close()
    for name in ("high", "normal", "low"):
        assert [message["priority"] for message in waiting(client, name)] == [BROKER_PRIORITIES[name]]
    assert not client.keys(f"{REGISTRY}.{channel._channel_id}.*")


def test_every_delivery_of_a_message_has_a_tag_of_its_own(broker):
    """kombu keeps a message's delivery tag through every restore: a late ack of its first delivery then removed
    the unacked entry of the second, and a worker killed holding the second left nothing to restore (the chaos soak
    lost jobs so on Sentinel)."""
    connection, client = broker
    queue = connection.SimpleQueue(QUEUE)
    queue.put({"n": 7})
    first = queue.get(timeout=5)
    first.channel.qos.restore_by_tag(first.delivery_tag)  # restored, as a lost connection does
    second = queue.get(timeout=5)
    assert second.payload == {"n": 7} and second.delivery_tag != first.delivery_tag
    first.ack()  # the first delivery's worker acks late
    assert client.hexists("unacked", second.delivery_tag)  # the second is still held, restorable
    second.ack()
    assert client.hlen("unacked") == 0
    queue.close()
