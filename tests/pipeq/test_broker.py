"""The Redis transport reuses one client per channel, and still works end to end."""

from kombu import Connection

from pipeq.broker import Transport


def test_a_channel_reuses_its_client_until_its_pool_changes(redis_url):
    with Connection(f"{redis_url}/9", transport=Transport) as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        channel._pool = None  # what a reconnection does
        with channel.conn_or_acquire() as third:
            assert third is not first


def test_messages_round_trip_through_the_transport(redis_url):
    with Connection(f"{redis_url}/9", transport=Transport) as connection:
        queue = connection.SimpleQueue("pipeq-broker-test")
        queue.put({"hello": "world"})
        message = queue.get(timeout=5)
        assert message.payload == {"hello": "world"}
        message.ack()
        queue.close()
