"""``pipeq ingest``: bucket notifications (Redis list, HTTP) and polling become exactly one job per object version."""

import argparse
import base64
import hashlib
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
from pipeq.config.settings import IngestRule, Settings
from pipeq.producer import Client

from devtools.local_services import free_port
from pipeq.ingest.ingester import Ingester, MalformedEvent, add_cli, jobs_for_event, run_cli
from tests.support.s3_events import REMOVED, put, record, redis_entry, webhook_body
from tests.support.settings import make_settings, model_name

TEXT = "text-classification"


def expected_id(bucket: str, key: str, tag: str) -> str:
    return "s3-" + hashlib.sha256(f"{bucket}\0{key}\0{tag}".encode()).hexdigest()[:40]


def rules_for(bucket: str) -> list[IngestRule]:
    return [
        IngestRule(bucket=bucket, prefix="reports/", suffix=".txt", task=TEXT, model=model_name(TEXT)),
        IngestRule(bucket=bucket, prefix="notes/", task=TEXT, parameters={"top_k": 2}),
    ]


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def bucket(s3) -> str:
    name = f"ingest-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@dataclass
class Offline:
    """An ingester whose jobs are queued where no worker takes them: jobs can be counted and read back."""

    settings: Settings
    client: Client
    ingester: Ingester
    broker: redis.Redis

    def queued(self) -> list[dict]:
        """The jobs waiting in the queue, oldest first."""
        jobs = []
        for raw in reversed(self.broker.lrange("pipeq", 0, -1)):
            message = json.loads(raw)
            body = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            jobs.append(json.loads(body)[0][0])
        return jobs

    def records(self) -> int:
        return len(self.client.store.redis.keys("pipeq:job:*"))


@pytest.fixture
def offline(redis_url, s3_endpoint, tiny_models, s3, bucket, redis_db) -> Iterator[Offline]:
    """An ingester whose broker database no worker consumes, so queued jobs can be counted and read."""
    settings = make_settings(redis_url, s3_endpoint, tiny_models, db=redis_db, ingest=rules_for(bucket))
    client = Client(settings)
    broker = redis.Redis.from_url(settings.broker_url)
    yield Offline(settings, client, Ingester(settings, client), broker)
    client.close()
    broker.close()


# --- parsing events ---------------------------------------------------------------------------------------


def test_jobs_for_event_reads_minio_and_s3_formats_and_decodes_keys():
    rules = rules_for("media")
    key = "reports/Q3 résumé ✓ 100%+.txt"
    created = record("media", key, '"0123abcd"')
    assert created["s3"]["object"]["key"] == "reports%2FQ3+r%C3%A9sum%C3%A9+%E2%9C%93+100%25%2B.txt"

    for event in (json.loads(redis_entry(created)), {"Records": [created]}, webhook_body(created)):
        [job] = jobs_for_event(event, rules)
        assert (job.bucket, job.key, job.uri) == ("media", key, f"s3://media/{key}")
        assert job.job_id == expected_id("media", key, "0123abcd")  # eTag unquoted, as in listings
        assert job.rule is rules[0]
    assert jobs_for_event({"Service": "Amazon S3", "Event": "s3:TestEvent"}, rules) == []


def test_deletions_other_buckets_and_non_matching_keys_are_ignored():
    rules = rules_for("media")
    event = {
        "Records": [
            record("media", "reports/a.txt", "e1", event_name=REMOVED),
            record("media", "reports/a.txt", None, event_name="ObjectRemoved:DeleteMarkerCreated"),  # S3 style
            record("media", "reports/a.pdf", "e2"),  # wrong suffix
            record("media", "other/a.txt", "e3"),  # no rule's prefix
            record("elsewhere", "reports/a.txt", "e4"),  # another bucket
            record("media", "notes/", "e5"),  # a folder marker
            record("media", "notes/b", "e6", event_name="ObjectCreated:CompleteMultipartUpload"),  # S3 style
        ]
    }
    [job] = jobs_for_event(event, rules)
    assert (job.key, job.rule) == ("notes/b", rules[1])


def test_a_malformed_record_is_logged_and_skipped_and_the_others_still_count(caplog):
    rules = rules_for("media")
    no_tag = record("media", "reports/c.txt", None)
    del no_tag["s3"]["object"]["sequencer"]
    event = {
        "Records": [
            "not a record",
            {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {}}},
            {"s3": {}},
            no_tag,
            record("media", "reports/a.txt", "e1"),
            record("media", "reports/b.txt", None, version_id="v-7"),  # no eTag: versionId identifies it
        ]
    }
    with caplog.at_level(logging.WARNING, logger="pipeq.ingest"):
        jobs = jobs_for_event(event, rules)
    assert [(job.key, job.tag, job.version_id) for job in jobs] == [
        ("reports/a.txt", "e1", None),
        ("reports/b.txt", "v-7", "v-7"),
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "skipping record 0 of an event: a record must be a JSON object, not str",
        "skipping record 1 of an event: s3:ObjectCreated:Put record without s3.bucket.name and s3.object.key",
        "skipping record 2 of an event: the record has no eventName",
        "skipping record 3 of an event: s3:ObjectCreated:Put record for s3://media/reports/c.txt "
        "has no eTag, versionId or sequencer",
    ]


@pytest.mark.parametrize("event", [[1, 2], {"Records": "nope"}, {"hello": "world"}, "s3://media/a.txt"])
def test_an_event_that_is_not_a_notification_is_refused(event):
    with pytest.raises(MalformedEvent, match="event"):
        jobs_for_event(event, rules_for("media"))


# --- Redis list ---------------------------------------------------------------------------------------------


def test_events_from_a_redis_list_run_end_to_end(settings, worker, client, s3, bucket):
    """MinIO's Redis target, versioned bucket: one job per object version; spaces and unicode in keys."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = put(s3, bucket, "reports/Q3 résumé ✓.txt", "great results this quarter — très bien".encode())
    second = put(s3, bucket, "reports/Q3 résumé ✓.txt", b"awful results, everything broke")  # a new version
    note = put(s3, bucket, "notes/2024 plan", b"we will ship it")
    ignored = put(s3, bucket, "reports/scan.pdf", b"%PDF-")
    events = [
        redis_entry(first, ignored, record(bucket, "reports/old.txt", "e0", event_name=REMOVED)),
        redis_entry(second, note),
        redis_entry(first),  # the same notification again
    ]
    tags = [r["s3"]["object"]["eTag"] for r in (first, second, note)]
    expected = [
        expected_id(bucket, "reports/Q3 résumé ✓.txt", tags[0]),
        expected_id(bucket, "reports/Q3 résumé ✓.txt", tags[1]),
        expected_id(bucket, "notes/2024 plan", tags[2]),
    ]
    key = f"minio:events:{bucket}"
    source = redis.Redis.from_url(settings.broker_url)
    source.rpush(key, *events)

    before = len(client.store.redis.keys("pipeq:job:s3-*"))
    ingester = Ingester(settings.model_copy(update={"ingest": rules_for(bucket)}), client)
    stop = threading.Event()
    thread = threading.Thread(target=ingester.run_redis_list, args=(key, stop, 0.1))
    thread.start()
    try:
        wait_until(lambda: source.llen(key) == 0 and source.llen(f"{key}:processing") == 0)
    finally:
        stop.set()
        thread.join()

    records = client.wait_many(expected, timeout=30)
    assert [records[job_id].state for job_id in expected] == ["succeeded"] * 3
    assert len(client.store.redis.keys("pipeq:job:s3-*")) == before + 3
    assert len(records[expected[2]].result) == 2  # the notes/ rule's parameters: top_k=2
    source.close()


def test_a_killed_ingester_leaves_the_event_in_the_processing_list_for_the_next(offline, s3, bucket, caplog):
    created = put(s3, bucket, "reports/a.txt", b"fine")
    key = "minio:events"
    offline.broker.rpush(key, redis_entry(created), "{not json", redis_entry(put(s3, bucket, "notes/b", b"ok")))
    # The dead ingester had moved the first entry into its processing list and died before submitting.
    offline.broker.lmove(key, f"{key}:processing", "LEFT", "RIGHT")
    assert (offline.broker.llen(key), offline.broker.llen(f"{key}:processing")) == (2, 1)

    stop = threading.Event()
    thread = threading.Thread(target=offline.ingester.run_redis_list, args=(key, stop, 0.1))
    with caplog.at_level(logging.ERROR, logger="pipeq.ingest"):
        thread.start()
        try:
            wait_until(lambda: len(offline.queued()) == 2)
            wait_until(lambda: offline.broker.llen(key) + offline.broker.llen(f"{key}:processing") == 0)
        finally:
            stop.set()
            thread.join()

    assert [job["input"]["uri"] for job in offline.queued()] == [
        f"s3://{bucket}/reports/a.txt",
        f"s3://{bucket}/notes/b",
    ]
    assert offline.records() == 2
    [dropped] = [r.getMessage() for r in caplog.records]
    assert dropped.startswith("dropping an entry of minio:events:processing: the event is not JSON")


# --- HTTP ---------------------------------------------------------------------------------------------------


@pytest.fixture
def serve(offline) -> Iterator[Callable[..., str]]:
    servers = []

    def start(auth_token: str | None = None) -> str:
        server = offline.ingester.serve_http("127.0.0.1", 0, auth_token=auth_token)
        servers.append(server)
        host, port = server.server_address[:2]
        return f"http://{host}:{port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_http_endpoint_submits_once_however_often_an_object_is_announced(offline, serve, s3, bucket):
    key = "reports/Q3 résumé ✓.txt"
    created = put(s3, bucket, key, "très bien".encode())
    job_id = expected_id(bucket, key, created["s3"]["object"]["eTag"])
    url = serve()

    first = httpx.post(url, json=webhook_body(created))
    assert (first.status_code, first.json()) == (200, {"jobs": [job_id]})
    again = httpx.post(url + "minio/events", content=json.dumps(webhook_body(created)).encode())
    assert (again.status_code, again.json()) == (200, {"jobs": [job_id]})
    assert offline.ingester.handle_event(json.loads(redis_entry(created))) == [job_id]  # the Redis list's way
    assert offline.ingester.poll() == []  # polling has seen it too

    [job] = offline.queued()
    assert (job["id"], job["task"], job["model"]) == (job_id, TEXT, model_name(TEXT))
    assert job["input"] == {"kind": "s3", "uri": f"s3://{bucket}/{key}", "version_id": None}
    assert offline.records() == 1

    deleted = httpx.post(url, json=webhook_body(record(bucket, key, None, event_name=REMOVED)))
    assert (deleted.status_code, deleted.json()) == (200, {"jobs": []})
    assert httpx.get(url).status_code == 200
    assert len(offline.queued()) == 1


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


# --- polling ------------------------------------------------------------------------------------------------


def test_polling_submits_objects_that_appear_after_the_first_pass(offline, s3, bucket):
    existing = put(s3, bucket, "reports/old.txt", b"was here before")
    assert offline.ingester.poll() == []  # the first pass only marks what is there as seen
    assert offline.queued() == []

    new = put(s3, bucket, "reports/new report.txt", b"arrived later")
    put(s3, bucket, "reports/new.pdf", b"no rule for this")
    new_id = expected_id(bucket, "reports/new report.txt", new["s3"]["object"]["eTag"])
    assert offline.ingester.poll() == [new_id]
    assert offline.ingester.poll() == []

    announced = put(s3, bucket, "notes/announced", b"an event told us first")
    [announced_id] = offline.ingester.handle_event({"Records": [announced]})
    assert offline.ingester.poll() == []

    restarted = Ingester(offline.settings, offline.client)
    assert restarted.poll() == []
    old_id = expected_id(bucket, "reports/old.txt", existing["s3"]["object"]["eTag"])
    assert restarted.handle_event(json.loads(redis_entry(existing, new, announced))) == [old_id, new_id, announced_id]
    changed = put(s3, bucket, "reports/new report.txt", b"overwritten: a new version")
    changed_id = expected_id(bucket, "reports/new report.txt", changed["s3"]["object"]["eTag"])
    assert restarted.poll() == [changed_id]

    assert [job["id"] for job in offline.queued()] == [new_id, announced_id, old_id, changed_id]
    assert offline.records() == 4  # new, announced, old (its event came), the new version


def test_polling_with_backfill_submits_what_is_already_there_page_by_page(offline, s3, bucket):
    keys = [f"reports/{n:02}.txt" for n in range(5)] + ["notes/a", "notes/b", "reports/skip.pdf", "elsewhere/c"]
    for key in keys:
        put(s3, bucket, key, key.encode())
    offline.ingester.page_size = 2
    ids = offline.ingester.poll(backfill=True)
    assert len(ids) == len(set(ids)) == 7
    assert sorted(job["input"]["uri"] for job in offline.queued()) == sorted(f"s3://{bucket}/{key}" for key in keys[:7])
    assert Ingester(offline.settings, offline.client).poll(backfill=True) == []  # a restart
    assert offline.records() == 7


# --- the command ----------------------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pipeq")
    add_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["ingest", *argv])


def test_the_command_needs_rules_and_a_source(offline, settings, capsys):
    assert run_cli(parse("--poll", "1"), settings) == 2
    assert "no [[ingest]] rules" in capsys.readouterr().err
    assert run_cli(parse(), offline.settings) == 2
    assert "--redis-list, --http or --poll" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("--http", "nowhere")
    args = parse("--redis-list", "events", "--http", ":8080", "--poll", "2.5", "--backfill", "--auth-token", "t")
    assert (args.redis_list, args.http, args.poll, args.backfill, args.auth_token) == (
        "events",
        ("0.0.0.0", 8080),
        2.5,
        True,
        "t",
    )


def test_the_command_serves_http_and_polls_until_sigterm(offline, s3, bucket):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    announced = put(s3, bucket, "reports/a.txt", b"posted")
    polled = put(s3, bucket, "notes/b", b"found by polling")
    outcome: dict = {}

    def drive() -> None:
        try:
            wait_until(lambda: _up(url))
            outcome["posted"] = httpx.post(url, json=webhook_body(announced), headers={"Authorization": "Bearer t"})
            wait_until(lambda: len(offline.queued()) == 2)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    driver.start()
    rc = run_cli(
        parse("--http", f"127.0.0.1:{port}", "--poll", "0.1", "--backfill", "--auth-token", "t"), offline.settings
    )
    driver.join()
    assert rc == 0
    assert outcome["posted"].status_code == 200
    assert {job["id"] for job in offline.queued()} == {
        expected_id(bucket, "reports/a.txt", announced["s3"]["object"]["eTag"]),
        expected_id(bucket, "notes/b", polled["s3"]["object"]["eTag"]),
    }


def _up(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False
