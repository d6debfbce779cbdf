"""Bucket notifications from a Redis list (MinIO's Redis target): end to end, and surviving a killed ingester."""

import json
import logging
import threading

import redis
from pydantic import SecretStr

from pipeq.config.settings import IngestRule
from pipeq.ingest.ingester import Ingester
from pipeq.ingest.redis_list import RedisListSource
from tests.support.s3_events import INGEST_ID_KEY, REMOVED, put, record, redis_entry
from tests.support.settings import BUCKET
from tests.support.waiting import wait_until

# The session's worker may read only the shared test bucket: this test's objects live in a folder of it.
FOLDER = "ingest-e2e/"
RULES = [
    IngestRule(
        bucket=BUCKET,
        prefix=f"{FOLDER}reports/",
        suffix=".txt",
        task="text-classification",
        model="tiny-text-classification",
    ),
    IngestRule(bucket=BUCKET, prefix=f"{FOLDER}notes/", task="text-classification", parameters={"top_k": 2}),
]
REPORT_V1 = "s3-71f7d9fb5a8f2d6100c1154ce79a4cc4f4caf5f1"
REPORT_V2 = "s3-2a639f3585cebb435ee579cc24e5a155bdc60178"
PLAN = "s3-f450cd034cb20db2e0aa78203a8ce9e54e42fa7f"


def test_events_from_a_redis_list_run_end_to_end(settings, worker, client, s3):
    """Versioned bucket: one job per object version; spaces and unicode in keys; repeats submit nothing new."""
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    try:
        first = put(s3, BUCKET, f"{FOLDER}reports/Q3 résumé ✓.txt", "great results this quarter — très bien".encode())
        second = put(s3, BUCKET, f"{FOLDER}reports/Q3 résumé ✓.txt", b"awful results, everything broke")
        note = put(s3, BUCKET, f"{FOLDER}notes/2024 plan", b"we will ship it")
        ignored = put(s3, BUCKET, f"{FOLDER}reports/scan.pdf", b"%PDF-")
    finally:  # the versions stay readable; later uploads to the shared bucket overwrite as before
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})
    assert first["s3"]["object"]["versionId"] != second["s3"]["object"]["versionId"]
    key = "minio:events:e2e"
    source = redis.Redis.from_url(settings.broker_url)
    source.rpush(
        key,
        redis_entry(first, ignored, record(BUCKET, f"{FOLDER}reports/old.txt", "e0", event_name=REMOVED)),
        redis_entry(second, note),
        redis_entry(first),  # the same notification again
    )

    before = len(client.store.redis.keys("pipeq:job:s3-*"))
    ingesting = settings.model_copy(update={"ingest": RULES, "ingest_id_key": SecretStr(INGEST_ID_KEY)})
    consumer = RedisListSource(Ingester(ingesting, client), key, block=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: source.llen(key) == 0 and source.llen(f"{key}:processing") == 0, message="list not drained")
    finally:
        stop.set()
        thread.join()
        consumer.close()
        source.close()

    records = client.wait_many([REPORT_V1, REPORT_V2, PLAN], timeout=30)
    assert [records[job_id].state for job_id in (REPORT_V1, REPORT_V2, PLAN)] == ["succeeded"] * 3
    assert len(client.store.redis.keys("pipeq:job:s3-*")) == before + 3
    assert len(records[PLAN].result) == 2  # the notes/ rule's parameters: top_k=2


def test_a_killed_ingester_leaves_the_event_in_the_processing_list_for_the_next(offline, s3, bucket, caplog):
    """...and an entry that is not an event is parked, with why, while the one behind it is processed."""
    created = put(s3, bucket, "reports/a.txt", b"fine")
    key = "minio:events"
    offline.broker.rpush(key, redis_entry(created), "{not json", redis_entry(put(s3, bucket, "notes/b", b"ok")))
    # The dead ingester had moved the first entry into its processing list and died before submitting.
    offline.broker.lmove(key, f"{key}:processing", "LEFT", "RIGHT")
    assert (offline.broker.llen(key), offline.broker.llen(f"{key}:processing")) == (2, 1)

    consumer = RedisListSource(offline.ingester, key, block=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    with caplog.at_level(logging.ERROR, logger="pipeq.ingest"):
        thread.start()
        try:
            wait_until(lambda: len(offline.queued()) == 2, message="two jobs not queued")
            wait_until(lambda: offline.broker.llen(key) + offline.broker.llen(f"{key}:processing") == 0)
        finally:
            stop.set()
            thread.join()
            consumer.close()

    assert [job["input"]["uri"] for job in offline.queued()] == [
        f"s3://{bucket}/reports/a.txt",
        f"s3://{bucket}/notes/b",
    ]
    assert offline.records() == 2
    [parked] = [r.getMessage() for r in caplog.records]
    assert parked.startswith("parking an entry of minio:events in minio:events:parked: the event is not JSON")
    [entry] = [json.loads(raw) for raw in offline.broker.lrange(f"{key}:parked", 0, -1)]
    assert entry["entry"] == "{not json"
    assert entry["error"].startswith("MalformedEvent: the event is not JSON")
    assert entry["attempts"] == 1


def test_the_list_is_read_from_the_redis_url_given(offline, redis_url, new_redis_db, s3, bucket):
    elsewhere = f"{redis_url}/{new_redis_db()}"
    other = redis.Redis.from_url(elsewhere)
    other.rpush("events", redis_entry(put(s3, bucket, "notes/n", b"hi")))
    consumer = RedisListSource(offline.ingester, "events", redis_url=elsewhere, block=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        wait_until(lambda: len(offline.queued()) == 1, message="the job was not queued")
    finally:
        stop.set()
        thread.join()
        consumer.close()
    assert other.llen("events") == 0
    assert offline.broker.exists("events") == 0
    other.close()
