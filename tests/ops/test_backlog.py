"""The backlog read from Redis alone: waiting, held and oldest-age per queue, whatever Redis holds."""

import base64
import json
import logging
import time
from contextlib import suppress
from datetime import UTC, datetime

import pytest
import redis
from kombu import Connection, Consumer, Queue
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from devtools.local_services import free_port
from pipeq.core.broker import SOURCES, WAKE_TOKEN, priority_lists
from pipeq.core.messaging import SENT_AT_HEADER
from pipeq.core.redis_client import redis_address
from pipeq.ops import metrics
from pipeq.ops.backlog import (
    MAX_MESSAGE_BYTES,
    READ_TIMEOUT_S,
    TAIL_BYTES,
    UNACKED,
    BacklogCollector,
    QueueBacklog,
    backlog_queues,
    read_backlog,
    routing_key,
    sent_at,
)
from pipeq.ops.http import impatient_redis
from pipeq.webhooks.delivery import create_webhooks_app, enqueue_deliveries
from tests.ops.conftest import QUEUES
from tests.support.waiting import wait_until


def oldest(broker: redis.Redis, queue: str) -> dict:
    """The oldest waiting message of ``queue``, decoded."""
    return json.loads(broker.lindex(queue, -1))


def counts(broker: redis.Redis, queue: str) -> tuple[int, int]:
    """``queue``'s (waiting, held)."""
    backlog = read_backlog(broker, [queue])[queue]
    return backlog.waiting, backlog.held


def job_body(message: dict) -> list:
    return json.loads(base64.b64decode(message["body"]))


def with_job_body(message: dict, body: list) -> dict:
    return {**message, "body": base64.b64encode(json.dumps(body).encode()).decode()}


def test_waiting_jobs_are_counted_per_queue_with_no_worker(own_settings, broker, producer):
    producer.submit_many("text-classification", ["a", "b", "c"])
    producer.submit_many("text-classification", ["d", "e"], model="classify-gpu")
    producer.submit("fill-mask", "paris is the [MASK] of france", model="fill")

    queues = backlog_queues(own_settings, ["extra", "cpu"])
    backlog = read_backlog(broker, queues)

    assert queues == [*QUEUES, "extra"]
    assert list(backlog) == queues
    assert {queue: (counts.waiting, counts.held) for queue, counts in backlog.items()} == {
        "cpu": (3, 0),
        "gpu": (2, 0),
        "pipeq": (1, 0),
        "pipeq.webhooks": (0, 0),
        "extra": (0, 0),
    }
    assert backlog["extra"] == QueueBacklog(0, 0, 0.0)


def test_messages_taken_and_not_acked_are_held_by_their_queue(own_settings, broker, producer):
    producer.submit_many("text-classification", ["a", "b", "c", "d"])
    producer.submit("text-classification", "e", model="classify-gpu")
    taken = []
    with Connection(own_settings.broker_url, transport="pipeq.core.broker:Transport") as connection:
        channel = connection.channel()
        channel.basic_qos(0, 3, False)
        with Consumer(channel, [Queue("cpu")], callbacks=[lambda _body, message: taken.append(message)]):
            deadline = time.monotonic() + 10
            while len(taken) < 3 and time.monotonic() < deadline:
                with suppress(TimeoutError):  # nothing came this time round
                    connection.drain_events(timeout=0.2)
            assert len(taken) == 3

            assert (counts(broker, "cpu"), counts(broker, "gpu")) == ((1, 3), (1, 0))
            taken[0].ack()
            assert counts(broker, "cpu") == (1, 2)
    # Closing the connection without acking gives the held messages back to their queue.
    wait_until(lambda: counts(broker, "cpu") == (3, 0), message=lambda: f"cpu: {counts(broker, 'cpu')}")


def test_messages_in_in_flight_lists_are_held_by_the_queue_they_came_from(broker):
    message = json.dumps({"body": "", "headers": {}}).encode()
    broker.hset(
        SOURCES,
        mapping={
            "pipeq.inflight.a.cpu": "cpu",
            "pipeq.inflight.b.cpu": "cpu",
            "pipeq.inflight.a.gpu": "gpu",
            "pipeq.inflight.a.other": "other",
            "pipeq.inflight.broken": "cpu",
        },
    )
    broker.lpush("pipeq.inflight.a.cpu", message, b"garbage")
    broker.lpush("pipeq.inflight.b.cpu", message)
    broker.lpush("pipeq.inflight.a.other", message)
    broker.set("pipeq.inflight.broken", "not a list")

    backlog = read_backlog(broker, ["cpu", "gpu"])

    assert (backlog["cpu"].held, backlog["gpu"].held) == (3, 0)
    assert (backlog["cpu"].waiting, backlog["gpu"].waiting) == (0, 0)


def test_waiting_jobs_of_every_priority_are_counted(broker, producer):
    producer.submit_many("text-classification", ["a", "b", "c"])
    producer.submit_many("text-classification", ["d", "e"], priority="low")
    producer.submit("text-classification", "f", priority="high")

    backlog = read_backlog(broker, ["cpu"])["cpu"]

    assert backlog.waiting == 6
    assert backlog.waiting_by_priority() == {"high": 1, "normal": 3, "low": 2}


def test_a_wake_token_is_not_a_waiting_job(broker, producer):
    producer.submit("text-classification", "urgent", priority="high")  # onto an empty queue: wakes consumers
    assert broker.lrange("cpu", 0, -1) == [WAKE_TOKEN]
    assert read_backlog(broker, ["cpu"])["cpu"].waiting_by_priority() == {"high": 1, "normal": 0, "low": 0}

    producer.submit("text-classification", "later")
    sent = json.loads(broker.lindex("cpu", 0))["headers"][SENT_AT_HEADER]
    backlog = read_backlog(broker, ["cpu"], now=sent + 10)["cpu"]
    assert backlog.waiting_by_priority() == {"high": 1, "normal": 1, "low": 0}
    assert backlog.oldest_age_s >= 10  # the high job's age, the older one, not the token's (unknown)


def test_the_oldest_waiting_age_is_that_of_the_oldest_list(broker, producer):
    producer.submit("text-classification", "normal")
    producer.submit("text-classification", "low", priority="low")
    lists = priority_lists("cpu")
    low = json.loads(broker.lindex(lists["low"], -1))
    sent = low["headers"][SENT_AT_HEADER]
    broker.rpush(lists["low"], json.dumps({**low, "headers": {**low["headers"], SENT_AT_HEADER: sent - 300}}))

    backlog = read_backlog(broker, ["cpu"], now=sent)["cpu"]

    assert (backlog.waiting, backlog.waiting_low) == (3, 2)
    assert backlog.oldest_age_s == pytest.approx(300)


def test_in_flight_lists_of_every_priority_are_held_by_their_queue(broker):
    message = json.dumps({"body": "", "headers": {}}).encode()
    for priority, key in priority_lists("cpu").items():
        broker.hset(SOURCES, f"pipeq.inflight.a.{key}", key)
        broker.lpush(f"pipeq.inflight.a.{key}", *[message] * {"high": 1, "normal": 2, "low": 3}[priority])

    assert read_backlog(broker, ["cpu"])["cpu"].held == 6


def kombu_entry(routing: str, exchange: str = "", body: str = "") -> bytes:
    """An entry of kombu's unacked hash, as kombu writes it."""
    message = {"body": body, "headers": {"task": "pipeq.infer"}, "properties": {"delivery_tag": "t"}}
    return json.dumps([message, exchange, routing]).encode()


def test_unacked_entries_are_held_by_their_routing_key_and_garbage_by_none(broker):
    broker.hset(
        UNACKED,
        mapping={
            "1": kombu_entry("cpu"),
            "2": kombu_entry("cpu", body="x" * (10 * TAIL_BYTES)),  # read from its tail only
            "3": kombu_entry('odd "queue" \\ name'),
            "4": kombu_entry("gpu", body='ends with "quotes", "", "cpu"]'),
            "5": b"junk",
            "6": b"",
            "7": b'["", "cpu"]',  # no message before the exchange
            "8": b'[{}, "", 5]',
            "9": b'[{}, "", ""]',
            "10": b'[{}, "", "cpu"',
            "11": b"\xff\xfe\x00",
            "12": b'"", "cpu"]',
        },
    )

    backlog = read_backlog(broker, ["cpu", "gpu", 'odd "queue" \\ name'])

    assert {queue: counts.held for queue, counts in backlog.items()} == {
        "cpu": 2,
        "gpu": 1,
        'odd "queue" \\ name': 1,
    }


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (kombu_entry("cpu"), "cpu"),
        (kombu_entry("pipeq.webhooks", exchange="pipeq.webhooks"), "pipeq.webhooks"),
        (kombu_entry("gpu") + b"  \n", "gpu"),
        (kombu_entry('a\\"b'), 'a\\"b'),
        (kombu_entry("cpu")[-40:], "cpu"),  # a tail cut in the middle of the message
        (b'[{}, "", "\\u00e9t\\u00e9"]', "\u00e9t\u00e9"),
        (b'[{}, "", "cpu\\"]', None),  # the closing quote is escaped: no string ends there
        (b'[{}, "", "bad \\x escape"]', None),
        (b"[{}, , ]", None),
        (b'"cpu"]', None),
        (b"]", None),
    ],
)
def test_routing_keys_are_read_from_the_end_of_an_unacked_entry(entry, expected):
    assert routing_key(entry) == expected


def test_held_counts_stop_at_the_scan_cap_with_a_warning(broker, caplog):
    broker.hset(UNACKED, mapping={str(n): kombu_entry("cpu") for n in range(30)})

    with caplog.at_level(logging.WARNING, logger="pipeq.ops.backlog"):
        assert read_backlog(broker, ["cpu"], max_scanned=10)["cpu"].held == 10
    assert "more than 10 entries" in caplog.text and "'unacked'" in caplog.text
    assert read_backlog(broker, ["cpu"])["cpu"].held == 30


def test_the_oldest_waiting_age_comes_from_the_sent_at_header(broker, producer):
    producer.submit_many("text-classification", ["first", "second"])
    message = oldest(broker, "cpu")
    sent = message["headers"][SENT_AT_HEADER]
    assert isinstance(sent, float)
    assert job_body(message)[0][0]["input"]["text"] == "first"  # index -1 is the oldest

    assert read_backlog(broker, ["cpu"], now=sent + 100)["cpu"].oldest_age_s == pytest.approx(100)
    assert read_backlog(broker, ["cpu"], now=sent - 100)["cpu"].oldest_age_s == 0  # never negative

    older = {**message, "headers": {**message["headers"], SENT_AT_HEADER: sent - 500}}
    broker.rpush("cpu", json.dumps(older))  # the right end: taken next, so the oldest
    backlog = read_backlog(broker, ["cpu"], now=sent + 100)["cpu"]
    assert (backlog.waiting, backlog.oldest_age_s) == (3, pytest.approx(600))


def test_webhook_deliveries_carry_the_sent_at_header(own_settings, broker, producer):
    app = create_webhooks_app(own_settings)
    job, _ = producer.make_job("text-classification", "hi", webhook="https://example.com/hook")
    try:
        enqueue_deliveries(app, [job])
    finally:
        app.close()
    sent = oldest(broker, "pipeq.webhooks")["headers"][SENT_AT_HEADER]

    backlog = read_backlog(broker, ["pipeq.webhooks"], now=sent + 30)["pipeq.webhooks"]

    assert (backlog.waiting, backlog.oldest_age_s) == (1, pytest.approx(30))


@pytest.mark.parametrize("header", ["missing", "yesterday", None, True, -5, 0, 10**400, [1], {"at": 1.0}, "NaN"])
def test_without_a_usable_header_the_age_comes_from_the_jobs_submitted_at(broker, producer, header):
    job, queue = producer.make_job("text-classification", "hi")
    producer.enqueue([(job, queue)])
    message = oldest(broker, "cpu")
    headers = {key: value for key, value in message["headers"].items() if key != SENT_AT_HEADER}
    text = json.dumps({**message, "headers": headers})
    if header == "NaN":
        text = json.dumps({**message, "headers": {**headers, SENT_AT_HEADER: float("nan")}})
    elif header != "missing":
        text = json.dumps({**message, "headers": {**headers, SENT_AT_HEADER: header}})
    broker.rpush("cpu", text)

    now = job.submitted_at.timestamp() + 42
    assert read_backlog(broker, ["cpu"], now=now)["cpu"].oldest_age_s == pytest.approx(42)


def test_a_submitted_at_without_a_time_zone_is_utc(broker, producer):
    producer.submit("text-classification", "hi")
    message = oldest(broker, "cpu")
    body = job_body(message)
    body[0][0]["submitted_at"] = "2030-01-01T00:00:00"
    del message["headers"][SENT_AT_HEADER]
    broker.rpush("cpu", json.dumps(with_job_body(message, body)))

    now = datetime(2030, 1, 1, tzinfo=UTC).timestamp() + 7
    assert read_backlog(broker, ["cpu"], now=now)["cpu"].oldest_age_s == pytest.approx(7)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GARBAGE = [
    b"\xff\x00junk",
    b"",
    b"{}",
    b"[1, 2]",
    b"null",
    b'{"headers": "x", "body": 5, "properties": []}',
    b'{"headers": {"pipeq_sent_at": "soon"}}',
    b'{"body": "!!! not base64", "properties": {"body_encoding": "base64"}}',
    json.dumps({"body": b64(b'[["not a job"], {}, {}]'), "properties": {"body_encoding": "base64"}}).encode(),
    json.dumps({"body": b64(b'[[{"submitted_at": 12}], {}, {}]'), "properties": {"body_encoding": "base64"}}).encode(),
    json.dumps({"body": b64(b'[[{"submitted_at": "never"}]]'), "properties": {"body_encoding": "base64"}}).encode(),
    json.dumps({"body": b64(b"\xff\xfe"), "properties": {"body_encoding": "base64"}}).encode(),
    json.dumps({"body": '[[{"submitted_at": "0001-01-01T00:00:00+14:00"}]]'}).encode(),
    b"[" * 100_000,
    b'{"a": ' * 50_000,
    json.dumps({"headers": {"pipeq_sent_at": 1.0}, "padding": "x" * MAX_MESSAGE_BYTES}).encode(),  # too large to read
]


@pytest.mark.parametrize("junk", GARBAGE, ids=range(len(GARBAGE)))
def test_a_garbage_message_waits_with_an_unknown_age(broker, junk):
    broker.lpush("cpu", junk)

    assert read_backlog(broker, ["cpu"], now=2e9)["cpu"] == QueueBacklog(waiting=1, held=0, oldest_age_s=0.0)
    assert sent_at(junk) is None


def test_garbage_among_jobs_is_counted_as_waiting(broker, producer):
    producer.submit_many("text-classification", ["a", "b"])
    broker.lpush("cpu", *GARBAGE)

    assert read_backlog(broker, ["cpu"])["cpu"].waiting == 2 + len(GARBAGE)


def test_keys_of_the_wrong_type_read_as_empty(broker, caplog):
    broker.set("cpu", "not a list")
    broker.hset("gpu", "not", "a list")
    broker.set(UNACKED, "not a hash")
    broker.rpush(SOURCES, "not a hash")

    with caplog.at_level(logging.WARNING, logger="pipeq.ops.backlog"):
        backlog = read_backlog(broker, ["cpu", "gpu"])

    assert backlog == {"cpu": QueueBacklog(), "gpu": QueueBacklog()}
    assert "'unacked' is not a hash" in caplog.text
    assert f"{SOURCES!r} is not a hash" in caplog.text


def scrape(registry: CollectorRegistry) -> dict[tuple[str, str | None], float]:
    """Every sample of ``registry`` by (name, queue label)."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, sample.labels.get("queue")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_collector_reads_the_backlog_at_every_scrape(broker, producer):
    registry = CollectorRegistry()
    registry.register(BacklogCollector(broker, ["cpu", "gpu", "cpu"]))
    producer.submit("text-classification", "a")
    broker.hset(UNACKED, "tag", kombu_entry("gpu"))

    first = scrape(registry)
    producer.submit("text-classification", "b")
    second = scrape(registry)

    assert first.pop(("pipeq_queue_oldest_waiting_age_seconds", "cpu")) >= 0
    assert first == {
        ("pipeq_queue_waiting_jobs", "cpu"): 1,
        ("pipeq_queue_waiting_jobs", "gpu"): 0,
        ("pipeq_queue_held_jobs", "cpu"): 0,
        ("pipeq_queue_held_jobs", "gpu"): 1,
        ("pipeq_queue_oldest_waiting_age_seconds", "gpu"): 0,
        ("pipeq_backlog_up", None): 1,
    }
    assert second[("pipeq_queue_waiting_jobs", "cpu")] == 2


def test_the_collector_uses_the_declared_names_help_and_labels(broker):
    collector = BacklogCollector(broker, ["cpu"])
    declared = dict([metrics.QUEUE_WAITING, metrics.QUEUE_HELD, metrics.QUEUE_OLDEST_AGE, metrics.BACKLOG_UP])

    families = list(collector.collect())

    assert {family.name: family.documentation for family in families} == declared
    for family in families:
        assert family.type == "gauge"
        labels = {tuple(sample.labels) for sample in family.samples}
        assert labels == {metrics.BACKLOG_LABELS.get(family.name, ())}
    assert {family.name for family in collector.describe()} == set(declared)


def test_when_redis_cannot_be_read_the_collector_says_so_and_does_not_raise(caplog):
    address = f"redis://127.0.0.1:{free_port()}/0"
    unreachable = impatient_redis(address, READ_TIMEOUT_S)
    with pytest.raises(redis.ConnectionError):
        read_backlog(unreachable, ["cpu"])
    registry = CollectorRegistry()
    collector = BacklogCollector(unreachable, ["cpu"], where=redis_address(address))
    registry.register(collector)

    with caplog.at_level(logging.WARNING, logger="pipeq.ops.backlog"):
        assert scrape(registry) == {("pipeq_backlog_up", None): 0}
        assert scrape(registry) == {("pipeq_backlog_up", None): 0}

    assert caplog.text.count("cannot read the backlog") == 1  # once per outage, not per scrape
    problem = collector.problem()
    assert problem is not None and redis_address(address) in problem and "ConnectionError" in problem


def test_addresses_in_messages_leave_credentials_out():
    assert redis_address("redis://user:s3cret@redis.internal:6380/2") == "redis://redis.internal:6380/2"
    assert redis_address("rediss://:s3cret@cache/0") == "rediss://cache/0"
    assert redis_address("unix:///run/redis.sock?db=3") == "unix:///run/redis.sock"
