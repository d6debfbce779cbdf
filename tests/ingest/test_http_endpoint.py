"""Bucket notifications POSTed to the HTTP endpoint (MinIO's webhook target)."""

import json
import socket
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from pipeq.ingest.http_endpoint import EndpointLimits, HttpEndpoint, UnsafeEndpoint
from pipeq.ingest.polling import Poller
from tests.support.s3_events import REMOVED, put, record, redis_entry, webhook_body

REPORT = "s3-f246bf16902c5ceee1b27e615b091ca84037ba39"
TOKEN = "an ingest test token, 16+ characters"


@pytest.fixture
def serve(offline) -> Iterator[Callable[..., str]]:
    """Starts the offline ingester's HTTP endpoint on a free port; its URL."""
    stop = threading.Event()
    running: list[tuple[HttpEndpoint, threading.Thread]] = []

    def start(auth_token: str | None = None) -> str:
        endpoint = HttpEndpoint(offline.ingester, "127.0.0.1", 0, auth_token=auth_token)
        thread = threading.Thread(target=endpoint.run, args=(stop,))
        thread.start()
        running.append((endpoint, thread))
        return endpoint.url

    yield start
    stop.set()
    for endpoint, thread in running:
        thread.join()
        endpoint.close()


@pytest.mark.parametrize("bucket_name", ["ingest-http-once"])
def test_the_http_endpoint_submits_once_however_often_an_object_is_announced(offline, serve, s3, bucket):
    key = "reports/Q3 résumé ✓.txt"
    created = put(s3, bucket, key, "très bien".encode())
    url = serve()

    first = httpx.post(url, json=webhook_body(created))
    assert (first.status_code, first.json()) == (200, {"jobs": [REPORT]})
    again = httpx.post(url + "minio/events", content=json.dumps(webhook_body(created)).encode())
    assert (again.status_code, again.json()) == (200, {"jobs": [REPORT]})
    assert offline.ingester.handle_event(json.loads(redis_entry(created)), "redis_list") == [REPORT]  # the list's way
    assert Poller(offline.ingester, interval=1.0, backfill=True).poll() == []  # polling has seen it too

    [job] = offline.queued()
    assert (job["id"], job["task"], job["model"]) == (REPORT, "text-classification", "tiny-text-classification")
    assert job["input"] == {"kind": "s3", "uri": f"s3://{bucket}/{key}", "version_id": None}
    assert offline.records() == 1

    deleted = httpx.post(url, json=webhook_body(record(bucket, key, None, event_name=REMOVED)))
    assert (deleted.status_code, deleted.json()) == (200, {"jobs": []})
    assert len(offline.queued()) == 1


def test_get_and_head_answer_that_the_endpoint_is_up(serve):
    url = serve()
    assert (httpx.get(url).status_code, httpx.get(url).json()) == (200, {"status": "ok"})
    head = httpx.head(url)
    assert (head.status_code, head.content) == (200, b"")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"Records": [', "the event is not JSON"),
        (b"\xff\xfe", "the event is not JSON"),
        (b'{"EventName": "s3:ObjectCreated:Put"}', 'an event needs a "Records" list'),
    ],
)
def test_the_http_endpoint_refuses_what_is_not_an_event(offline, serve, body, message):
    response = httpx.post(serve(), content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert offline.queued() == []


def test_the_http_endpoint_checks_the_shared_secret(offline, serve, s3, bucket):
    url = serve(auth_token=TOKEN)
    body = webhook_body(put(s3, bucket, "notes/n", b"hello"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = httpx.post(url, json=body, headers=headers)
        assert refused.status_code == 401
        assert "Authorization: Bearer" in refused.json()["error"]
    assert offline.queued() == []
    accepted = httpx.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert accepted.status_code == 200
    assert len(accepted.json()["jobs"]) == len(offline.queued()) == 1


def test_a_short_token_is_refused(offline):
    with pytest.raises(UnsafeEndpoint, match="the ingest auth token has 6 characters; use at least 16"):
        HttpEndpoint(offline.ingester, "127.0.0.1", 0, auth_token="s3cr3t")


def test_a_token_lets_the_endpoint_listen_beyond_loopback(offline):
    endpoint = HttpEndpoint(offline.ingester, "0.0.0.0", 0, auth_token=TOKEN)  # bound, never sent anything
    try:
        assert not endpoint.loopback_only
    finally:
        endpoint.close()


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({"Content-Length": "+12"}, 400, "is not a number of bytes"),
        ({"Content-Length": " 1_0"}, 400, "is not a number of bytes"),
        ({"Content-Length": "12, 12"}, 400, "is not a number of bytes"),
        ({"Content-Length": "\u00b2"}, 400, "is not a number of bytes"),  # a superscript two: isdigit(), not a digit
        ({"Content-Length": "99999999999999999999999999"}, 413, "limited to 1024 bytes"),
        ({"Transfer-Encoding": "chunked"}, 411, "chunked bodies are not accepted"),
        ({}, 411, "a Content-Length header is required"),
    ],
)
def test_a_malformed_or_missing_length_is_refused(offline, headers, status, message):
    endpoint = HttpEndpoint(offline.ingester, "127.0.0.1", 0, limits=EndpointLimits(max_body_bytes=1024))
    stop = threading.Event()
    thread = threading.Thread(target=endpoint.run, args=(stop,))
    thread.start()
    try:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        answer = raw_exchange(endpoint, f"POST / HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode("latin-1"))
    finally:
        stop.set()
        thread.join()
        endpoint.close()
    assert answer.startswith(f"HTTP/1.0 {status} ".encode())
    assert message.encode() in answer
    assert offline.queued() == []


def test_several_lengths_are_refused(offline, serve):
    url = serve()
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(request)
        answer = receive_all(conn)
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert b"2 Content-Length headers: send exactly one" in answer


def raw_exchange(endpoint: HttpEndpoint, request: bytes) -> bytes:
    host, port = endpoint.server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(request)
        return receive_all(conn)


def receive_all(conn: socket.socket) -> bytes:
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return received
