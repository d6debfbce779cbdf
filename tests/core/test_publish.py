"""Pipelined publishing writes exactly what Celery's send_task writes, to the same list, priorities included."""

import base64
import json

import pytest
import redis

from pipeq.core import publish
from pipeq.core.contract import PRIORITIES
from pipeq.producer import Client
from tests.support.settings import make_settings

TEXT = "text-classification"
VOLATILE_HEADERS = ("pipeq_sent_at",)


@pytest.fixture
def producer(redis_url, s3_endpoint, tiny_models, redis_db):
    client = Client(make_settings(redis_url, s3_endpoint, tiny_models, db=redis_db))
    broker = redis.Redis.from_url(f"{redis_url}/{redis_db}")
    yield client, broker
    client.close()
    broker.close()


def lists(broker: redis.Redis) -> dict[bytes, list[dict]]:
    """Every message list of the broker database, its messages decoded."""
    found = {}
    for key in broker.scan_iter():
        if broker.type(key) == b"list":
            found[key] = [json.loads(item) for item in broker.lrange(key, 0, -1) if item.startswith(b"{")]
    return found


def comparable(message: dict) -> dict:
    """A message without what differs between two sends of one job: its delivery tag and send time."""
    properties = {key: value for key, value in message["properties"].items() if key != "delivery_tag"}
    headers = {key: value for key, value in message["headers"].items() if key not in VOLATILE_HEADERS}
    return {**message, "properties": properties, "headers": headers}


@pytest.mark.parametrize("priority", PRIORITIES)
def test_a_pipelined_message_is_the_one_send_task_writes(producer, priority):
    client, broker = producer
    job, queue = client.make_job(TEXT, "the same job twice", priority=priority)
    with client.celery.producer_or_acquire() as kombu_producer:
        publish.send_one(client.celery, kombu_producer, job, queue)
    sent = lists(broker)
    broker.flushdb()
    published: list[str] = []
    publish.publish_jobs(client.celery, [(job, queue)], published.extend)
    pipelined = lists(broker)
    assert published == [job.id]
    assert sent.keys() == pipelined.keys()  # the same list: the channel's _q_for_pri(queue, priority)
    [(key, [reference])] = [(key, messages) for key, messages in sent.items() if messages]
    assert [comparable(message) for message in pipelined[key]] == [comparable(reference)]
    assert pipelined[key][0]["headers"]["pipeq_sent_at"] >= reference["headers"]["pipeq_sent_at"]
    body = json.loads(base64.b64decode(pipelined[key][0]["body"]))
    assert body[0][0]["id"] == job.id and body[0][0]["priority"] == priority


def test_a_chunk_keeps_its_order_in_each_list(producer):
    client, broker = producer
    priorities = ["normal", "normal", "high", "low", "low", "low", "normal", "high", "high", "normal", "low"]
    made = [client.make_job(TEXT, f"job {i}", priority=priority) for i, priority in enumerate(priorities)]
    publish.publish_jobs(client.celery, made, lambda ids: None)
    channel_lists = lists(broker)
    order = {}
    for key, messages in channel_lists.items():
        order[key] = [message["headers"]["id"] for message in reversed(messages)]  # LPUSH: oldest at the tail
    expected = {}
    with client.celery.producer_or_acquire() as kombu_producer:
        channel = kombu_producer.channel
        for job, queue in made:
            key = channel._q_for_pri(queue, publish.broker_priority(job.priority)).encode()
            expected.setdefault(key, []).append(job.id)
    assert {key: ids for key, ids in order.items() if ids} == expected


def test_a_chunk_the_server_refuses_publishes_nothing(producer, monkeypatch):
    client, broker = producer
    made = [client.make_job(TEXT, f"job {i}", priority=("normal", "high")[i % 2]) for i in range(6)]
    refused = ("lpush", ["pipeq"])  # no value: refused when queued, so EXEC runs nothing
    monkeypatch.setattr(publish, "_coalesced", lambda commands, merge=publish._coalesced: [*merge(commands), refused])
    published: list[str] = []
    with pytest.raises(redis.RedisError):
        publish.publish_jobs(client.celery, made, published.extend)
    assert (published, {key: messages for key, messages in lists(broker).items() if messages}) == ([], {})
