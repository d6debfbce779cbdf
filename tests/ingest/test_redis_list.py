"""Bucket notifications from a Redis list (MinIO's Redis target): end to end, and surviving a killed ingester."""

import logging
import threading

import redis
from pipeq.config.settings import IngestRule

from pipeq.ingest.ingester import Ingester
from pipeq.ingest.redis_list import RedisListSource
from tests.support.s3_events import REMOVED, put, record, redis_entry
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
REPORT_V1 = "s3-95851b726b58c0f904753877e99ae40426ad8001"
REPORT_V2 = "s3-79451baa22c26681ffc1bc3c43d59f6f5ce13882"
PLAN = "s3-8e59c3d745bc9736b0ba2a7e40158a1c4c5b2fc9"


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
    consumer = RedisListSource(Ingester(settings.model_copy(update={"ingest": RULES}), client), key, block=0.1)
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
    [dropped] = [r.getMessage() for r in caplog.records]
    assert dropped.startswith("dropping an entry of minio:events:processing: the event is not JSON")


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
