"""Bucket notifications POSTed to the HTTP endpoint (MinIO's webhook target)."""

import json
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from pipeq.ingest.http_endpoint import HttpEndpoint
from pipeq.ingest.polling import Poller
from tests.support.s3_events import REMOVED, put, record, redis_entry, webhook_body

REPORT = "s3-5eff94c8a596ce0a8c54b665fc6cec02ca5571e4"


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
    assert offline.ingester.handle_event(json.loads(redis_entry(created))) == [REPORT]  # the Redis list's way
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
    url = serve(auth_token="s3cr3t")
    body = webhook_body(put(s3, bucket, "notes/n", b"hello"))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cr3t"}):
        refused = httpx.post(url, json=body, headers=headers)
        assert refused.status_code == 401
        assert "Authorization: Bearer" in refused.json()["error"]
    assert offline.queued() == []
    accepted = httpx.post(url, json=body, headers={"Authorization": "Bearer s3cr3t"})
    assert accepted.status_code == 200
    assert len(accepted.json()["jobs"]) == len(offline.queued()) == 1
