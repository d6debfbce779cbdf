"""Ingest edges (issue 10): the HTTP endpoint refuses malformed lengths and events with 4xx, never reads past its
cap, cuts slow clients off, caps connections and needs a token off loopback; a bad entry in the Redis list is
parked instead of blocking the rest; job ids are keyed, so no one without the key can compute them."""

import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from pydantic import SecretStr

from pipeq.config.settings import IngestRule, Settings
from pipeq.ingest.http_endpoint import EndpointLimits, HttpEndpoint
from pipeq.ingest.ingester import Ingester
from pipeq.ingest.redis_list import MAX_ATTEMPTS, RedisListSource
from pipeq.producer import Client
from tests.support.s3_events import record, redis_entry, webhook_body
from tests.support.settings import make_settings
from tests.support.waiting import wait_until

KEY = "ingest edge tests: a key of 32+ random characters"
OTHER_KEY = "ingest edge tests: another key, 32+ characters long"
MARGIN = 1.5
"""Seconds a cut-off may come after its limit in these tests: thread wake-ups on a busy machine."""


@dataclass
class Ingesting:
    settings: Settings
    client: Client
    ingester: Ingester
    bucket: str

    def job_id(self, key: str, etag: str, id_key: str = KEY) -> str:
        """The id pipeq must give this object version, computed here apart from pipeq."""
        message = f"{self.bucket}\0{key}\0{etag}".encode()
        return "s3-" + hmac.new(id_key.encode(), message, hashlib.sha256).hexdigest()[:40]

    def exists(self, job_id: str) -> bool:
        return self.client.store.get(job_id) is not None


@pytest.fixture
def ingesting(redis_url, s3_endpoint, redis_db) -> Iterator[Ingesting]:
    """An ingester (everything in the bucket -> text-classification) whose jobs no worker takes."""
    bucket = f"edges-{uuid.uuid4().hex[:12]}"
    rule = IngestRule(bucket=bucket, task="text-classification")
    settings = make_settings(redis_url, s3_endpoint, {}, db=redis_db, ingest=[rule], ingest_id_key=KEY)
    client = Client(settings)
    yield Ingesting(settings, client, Ingester(settings, client), bucket)
    client.close()


@pytest.fixture
def endpoint(ingesting) -> Iterator[HttpEndpoint]:
    """The HTTP endpoint on loopback, limits small enough to test: 1 KiB bodies, 0.5 s of silence, 1.5 s per request,
    two connections."""
    limits = EndpointLimits(max_body_bytes=1024, socket_timeout_s=0.5, request_deadline_s=1.5, max_connections=2)
    serving = HttpEndpoint(ingesting.ingester, "127.0.0.1", 0, limits=limits)
    stop = threading.Event()
    thread = threading.Thread(target=serving.run, args=(stop,))
    thread.start()
    yield serving
    stop.set()
    thread.join()
    serving.close()


def connect(endpoint: HttpEndpoint) -> socket.socket:
    return socket.create_connection(endpoint.server.server_address[:2], timeout=10)


def answer(conn: socket.socket) -> bytes:
    """Everything the endpoint sends until it closes the connection."""
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def post_raw(endpoint: HttpEndpoint, length: str, body: bytes) -> bytes:
    """POST ``body`` with ``Content-Length: length`` verbatim, then end the sending side; the reply."""
    with connect(endpoint) as conn:
        conn.sendall(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode() + body)
        conn.shutdown(socket.SHUT_WR)
        return answer(conn)


def event_body(ingesting: Ingesting, key: str = "a.txt", etag: str = "e1") -> bytes:
    return json.dumps(webhook_body(record(ingesting.bucket, key, etag))).encode()


# -- lengths, bodies, malformed events --------------------------------------------------------------------


@pytest.mark.parametrize("length", ["-1", "abc", "+{n}", "{n}.0", "0x{n}", "1_0", "{n}, {n}"])
def test_a_negative_or_non_numeric_length_is_refused(ingesting, endpoint, length):
    body = event_body(ingesting)
    reply = post_raw(endpoint, length.format(n=len(body)), body)
    assert status(reply) == 400
    assert b"is not a number of bytes (digits only)" in reply
    assert not ingesting.exists(ingesting.job_id("a.txt", "e1"))  # the event behind it was not taken


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"Records": [', b"the event is not JSON"),
        (b"[" * 100_000, b"nested too deep"),  # a RecursionError in the JSON parser
        (b'{"Records": "none"}', b'an event needs a \\"Records\\" list'),
        (b"\xff\xfe", b"the event is not JSON"),
    ],
)
def test_an_unparseable_event_is_refused_with_400(ingesting, endpoint, body, error):
    big = EndpointLimits(max_body_bytes=1024 * 1024)
    roomy = HttpEndpoint(ingesting.ingester, "127.0.0.1", 0, limits=big)
    stop = threading.Event()
    thread = threading.Thread(target=roomy.run, args=(stop,))
    thread.start()
    try:
        reply = post_raw(roomy, str(len(body)), body)
    finally:
        stop.set()
        thread.join()
        roomy.close()
    assert status(reply) == 400
    assert error in reply


def test_a_body_past_the_cap_is_refused_without_being_read(ingesting):
    serving = HttpEndpoint(ingesting.ingester, "127.0.0.1", 0)  # the default cap: 1 MiB
    stop = threading.Event()
    thread = threading.Thread(target=serving.run, args=(stop,))
    thread.start()
    try:
        with connect(serving) as conn:
            conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n" + b"[" * 1000)
            reply = answer(conn)  # the rest of the 2 MiB is never sent: the answer comes without it
    finally:
        stop.set()
        thread.join()
        serving.close()
    assert status(reply) == 413
    assert b"events are limited to 1048576 bytes" in reply


# -- slow clients, many clients ---------------------------------------------------------------------------


def test_a_client_that_goes_quiet_is_cut_off_by_the_socket_timeout(endpoint):
    with connect(endpoint) as conn:
        conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # ...and then nothing
        started = time.monotonic()
        assert answer(conn) == b""  # closed, without an answer
        assert time.monotonic() - started < 0.5 + MARGIN


def test_a_client_sending_a_byte_at_a_time_is_cut_off_at_the_request_deadline(ingesting, endpoint):
    body = event_body(ingesting)
    request = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    closed = threading.Event()
    with connect(endpoint) as conn:
        threading.Thread(target=lambda: (answer(conn), closed.set()), daemon=True).start()
        started = time.monotonic()
        for byte in request:  # each byte well within the socket timeout; the whole request would take ~40 s
            if closed.is_set():
                break
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        assert closed.wait(5)
        assert time.monotonic() - started < 1.5 + MARGIN
    assert not ingesting.exists(ingesting.job_id("a.txt", "e1"))


def test_connections_past_the_cap_get_503_and_the_endpoint_serves_again_after(endpoint):
    idle = [connect(endpoint) for _ in range(2)]
    for conn in idle:
        conn.sendall(b"GET / HTTP/1.1\r\n")  # holding a slot: headers not finished
    time.sleep(0.1)
    with connect(endpoint) as third:
        reply = answer(third)
    assert status(reply) == 503
    assert b"too many connections" in reply
    for conn in idle:
        conn.close()
    wait_until(lambda: get_status(endpoint) == 200, message="the slots were not given back")


def get_status(endpoint: HttpEndpoint) -> int:
    with connect(endpoint) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return status(answer(conn))


# -- a token off loopback ---------------------------------------------------------------------------------


def test_the_endpoint_refuses_to_start_on_all_interfaces_without_a_token(ingesting):
    with pytest.raises(ValueError, match=r"refusing to accept events on 0\.0\.0\.0:0 without a token") as refused:
        HttpEndpoint(ingesting.ingester, "0.0.0.0", 0)
    assert "PIPEQ_INGEST_AUTH_TOKEN" in str(refused.value) and "127.0.0.1" in str(refused.value)


# -- the Redis list: a bad entry never blocks the others --------------------------------------------------


def consume(ingesting: Ingesting, key: str, until: Callable[[], bool]) -> None:
    """Run a Redis-list source on ``key`` until ``until()`` holds."""
    source = RedisListSource(ingesting.ingester, key, block=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,))
    thread.start()
    try:
        wait_until(until, timeout=20, message="the entries behind the bad one were not processed")
    finally:
        stop.set()
        thread.join()
        source.close()


def test_an_unparseable_entry_is_parked_and_the_events_behind_it_are_processed(ingesting):
    broker = redis.Redis.from_url(ingesting.settings.broker_url)
    key = "minio:events"
    broker.rpush(key, "{not json", "[" * 100_000, redis_entry(record(ingesting.bucket, "b.txt", "e2")))
    behind = ingesting.job_id("b.txt", "e2")
    consume(ingesting, key, lambda: ingesting.exists(behind) and broker.llen(f"{key}:processing") == 0)
    parked = [json.loads(raw) for raw in broker.lrange(f"{key}:parked", 0, -1)]
    assert [entry["entry"][:9] for entry in parked] == ["{not json", "[" * 9]
    assert [entry["error"].split(":")[0] for entry in parked] == ["MalformedEvent", "MalformedEvent"]
    assert broker.llen(key) == 0


def test_an_entry_whose_jobs_cannot_be_submitted_is_parked_after_a_few_attempts(ingesting, monkeypatch):
    broker = redis.Redis.from_url(ingesting.settings.broker_url)
    key = "minio:events"
    poison = redis_entry(record(ingesting.bucket, "poison.txt", "e3"))
    broker.rpush(key, poison, redis_entry(record(ingesting.bucket, "c.txt", "e4")))
    handle = ingesting.ingester.handle_event
    tries: list[int] = []

    def failing_on_poison(event, source):
        if "poison.txt" in json.dumps(event):
            tries.append(1)
            raise RuntimeError("this entry breaks something")
        return handle(event, source)

    monkeypatch.setattr(ingesting.ingester, "handle_event", failing_on_poison)
    behind = ingesting.job_id("c.txt", "e4")
    consume(ingesting, key, lambda: ingesting.exists(behind))
    [parked] = [json.loads(raw) for raw in broker.lrange(f"{key}:parked", 0, -1)]
    assert parked["entry"] == poison
    assert parked["error"] == "RuntimeError: this entry breaks something"
    assert parked["attempts"] == len(tries) == MAX_ATTEMPTS


# -- keyed job ids ----------------------------------------------------------------------------------------


def test_job_ids_are_keyed_and_differ_with_another_key(ingesting):
    event = {"Records": [record(ingesting.bucket, "d.txt", "e5")]}
    expected = ingesting.job_id("d.txt", "e5")
    assert ingesting.ingester.handle_event(event, "http") == [expected]
    assert expected != "s3-" + hashlib.sha256(f"{ingesting.bucket}\0d.txt\0e5".encode()).hexdigest()[:40]

    rekeyed = ingesting.settings.model_copy(update={"ingest_id_key": SecretStr(OTHER_KEY)})
    other_id = ingesting.job_id("d.txt", "e5", OTHER_KEY)
    assert Ingester(rekeyed, ingesting.client).handle_event(event, "http") == [other_id]
    assert other_id != expected
