"""Job records: field names, records written by earlier versions, and waits that outlast a Redis outage."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis.exceptions

from benchmarks.soak_services import PersistentRedis
from pipeq.core import records
from pipeq.core.records import JobRecord, RecordStore, now

OLD_RECORD = (
    '{"state":"succeeded","id":"j1","task":"text-classification","model":"m",'
    '"submitted_at":"2026-11-01T10:00:00Z","result":[{"label":"POSITIVE","score":0.9}],"batch_size":12,"attempts":1}'
)


def test_a_record_written_before_the_rename_reads_its_micro_batch_size():
    record = JobRecord.model_validate_json(OLD_RECORD)
    assert record.micro_batch_jobs == 12
    assert "batch_size" not in record.model_dump()
    assert record.model_dump_json().startswith('{"state":"succeeded",')  # the final-record script relies on it


def test_states_are_read_without_parsing_records(redis_url, redis_db):
    store = RecordStore(f"{redis_url}/{redis_db + 1}")
    queued = JobRecord(state="queued", id="state-1", task="text-classification", model="m", submitted_at=now())
    store.write([queued, queued.model_copy(update={"id": "state-2"}).ended("canceled", "Canceled", "no")])
    assert store.states(["state-1", "state-2", "state-none"]) == ["queued", "canceled", None]
    assert store.states([]) == []


def _queued(job_id: str) -> JobRecord:
    return JobRecord(state="queued", id=job_id, task="text-classification", model="m", submitted_at=now())


def test_a_wait_rides_out_a_redis_restart_and_hears_the_job_finish_after_it(tmp_path):
    server = PersistentRedis(tmp_path / "redis")
    server.start()
    store = RecordStore(f"{server.url}/0")
    try:
        store.write([_queued("outage-1")])
        waiting = ThreadPoolExecutor(1).submit(store.wait, ["outage-1"], 60, 0.2)
        time.sleep(0.5)  # listening
        server.kill()
        time.sleep(1.0)  # the waiter finds Redis gone and keeps trying
        server.start()
        store.write([_queued("outage-1").ended("canceled", "Canceled", "after the restart")])
        record = waiting.result(timeout=30)["outage-1"]
    finally:
        server.stop()
    assert record.state == "canceled" and record.error.message == "after the restart"


def test_a_wait_gives_up_on_redis_gone_for_longer_than_the_outage_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "OUTAGE_LIMIT_S", 1.0)
    server = PersistentRedis(tmp_path / "redis")
    server.start()
    store = RecordStore(f"{server.url}/0")
    store.write([_queued("outage-2")])
    waiting = ThreadPoolExecutor(1).submit(store.wait, ["outage-2"], 60, 0.2)
    time.sleep(0.5)
    server.kill()
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        waiting.result(timeout=30)
    assert time.monotonic() - started < 30  # not the wait's own timeout of 60 s
