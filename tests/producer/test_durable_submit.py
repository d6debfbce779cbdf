"""Durable submission (submit_replicas): a submit returns once Redis replicas hold its jobs, refuses to pretend
otherwise, and a resubmission after an unknown outcome publishes a queued job again."""

import pytest
import redis

from pipeq.core.contract import payload_sha256
from pipeq.core.records import JobRecord, RecordStore
from pipeq.core.replication import NotReplicated, ReplicaWait, run_transaction
from pipeq.producer import Client
from tests.support.settings import make_settings

TEXT = "text-classification"


@pytest.fixture
def lonely_settings(redis_url, s3_endpoint, tiny_models, redis_db):
    """A Redis with no replica, and a submit that asks for one."""
    settings = make_settings(redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db)
    return settings.model_copy(update={"submit_replicas": 1, "submit_replicas_timeout_s": 0.2})


@pytest.fixture
def replicated_settings(sentinel, s3_endpoint, tiny_models):
    sentinel.wait_for_replica()
    with redis.Redis(port=sentinel.primary_port()) as primary:
        primary.flushall()
    settings = make_settings("redis://unused", s3_endpoint, {TEXT: tiny_models[TEXT]})
    return settings.model_copy(
        update={"broker_url": sentinel.url(0), "result_backend": sentinel.url(1), "submit_replicas": 1}
    )


def test_a_submit_no_replica_acknowledges_enqueues_nothing_and_says_why(lonely_settings, redis_url, redis_db):
    client = Client(lonely_settings)
    try:
        with pytest.raises(NotReplicated) as caught:
            client.submit_many(TEXT, ["first", "second"], job_ids=["durable-1", "durable-2"])
    finally:
        client.close()
    message = str(caught.value)
    assert "nothing was enqueued" in message and "0 of the 1 Redis replica(s)" in message
    assert "submit_replicas" in message and "submit again" in message
    assert caught.value.job_ids == ["durable-1", "durable-2"] and not caught.value.enqueued
    with (
        redis.Redis.from_url(f"{redis_url}/{redis_db}") as broker,
        redis.Redis.from_url(f"{redis_url}/{redis_db + 1}") as records,
    ):
        assert broker.dbsize() == 0  # no message
        assert not records.exists(RecordStore.key("durable-1"), RecordStore.key("durable-2"))


def test_a_resubmission_no_replica_acknowledges_forgets_only_the_jobs_it_created(lonely_settings):
    """The chaos soak lost jobs this way: a retried submit found its jobs already enqueued (even finished) by the
    attempt before, no replica answered, and the retry removed their records with its own; the next retry made
    them queued again with no message."""
    fast = Client(lonely_settings.model_copy(update={"submit_replicas": 0}))
    durable = Client(lonely_settings)
    try:
        fast.submit_many(TEXT, ["kept"], job_ids=["kept-1"])
        finished = fast.store.get("kept-1").ended("canceled", "Canceled", "finished before the retry")
        fast.store.write([finished])
        with pytest.raises(NotReplicated) as caught:
            durable.submit_many(TEXT, ["kept", "new"], job_ids=["kept-1", "new-1"])
        assert caught.value.job_ids == ["new-1"] and not caught.value.enqueued
        assert fast.store.get("kept-1") == finished
        assert fast.store.get("new-1") is None
    finally:
        fast.close()
        durable.close()


def test_without_submit_replicas_the_same_redis_accepts_at_once(lonely_settings):
    client = Client(lonely_settings.model_copy(update={"submit_replicas": 0}))
    try:
        assert client.submit_many(TEXT, ["first"], job_ids=["fast-1"]) == ["fast-1"]
    finally:
        client.close()


def test_a_durable_submit_returns_with_the_replica_holding_record_and_message(replicated_settings, sentinel):
    client = Client(replicated_settings)
    try:
        ids = client.submit_many(TEXT, [f"review {i}" for i in range(50)])
    finally:
        client.close()
    replica_port = next(port for port in sentinel.servers if port != sentinel.primary_port())
    with redis.Redis(port=replica_port, db=0) as broker, redis.Redis(port=replica_port, db=1) as records:
        queued = sum(broker.llen(key) for key in broker.scan_iter(_type="list"))
        assert queued == len(ids)
        assert records.exists(*[RecordStore.key(job_id) for job_id in ids]) == len(ids)


@pytest.mark.parametrize("replicas", [0, 1], ids=["default", "durable"])
def test_a_resubmission_publishes_a_job_whose_submit_was_cut_short(replicated_settings, sentinel, replicas):
    """A submit cut short between the record and the message (a crash, a failover; the soak found it): the record
    stays queued with its unpublished marker, and resubmitting the same payload with the same id publishes it once.
    A job whose message was published is not published again."""
    client = Client(replicated_settings.model_copy(update={"submit_replicas": replicas}))
    job, queue = client.make_request({"task": TEXT, "input": "cut short", "id": f"cut-{replicas}"})
    record = JobRecord.of(job, "queued", webhook=None, payload_sha256=payload_sha256(job))
    try:
        assert client.store.create([record]) == [None]  # the record, then the crash: no message
        with redis.Redis(port=sentinel.primary_port(), db=0) as broker:
            assert broker.llen(queue) == 0
            ids = client.submit_many(TEXT, ["cut short"], job_ids=[job.id])
            assert ids == [job.id] and ids.existing == 1 and broker.llen(queue) == 1
            client.submit_many(TEXT, ["cut short"], job_ids=[job.id])  # published now: a replay changes nothing
            assert broker.llen(queue) == 1
    finally:
        client.close()


def test_a_transaction_runs_whole_then_waits_on_the_same_connection(redis_url, redis_db):
    client = redis.Redis.from_url(f"{redis_url}/{redis_db}")
    acknowledged = run_transaction(client, [("lpush", ("q", "a", "b")), ("set", ("k", "v"))], ReplicaWait(1, 0.1))
    assert acknowledged == 0 and client.llen("q") == 2 and client.get("k") == b"v"
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):  # an error inside EXEC is not swallowed
        run_transaction(client, [("lpush", ("k", "x"))], ReplicaWait(1, 0.1))
    assert run_transaction(client, [("lpush", ("q", "c"))], None) == 0 and client.llen("q") == 3
    client.close()


@pytest.mark.parametrize(("replicas", "timeout"), [(-1, 1.0), (17, 1.0), (1, 0), (1, 61)])
def test_submit_replicas_settings_are_bounded(lonely_settings, replicas, timeout):
    from pydantic import ValidationError

    from pipeq.config.settings import Settings

    data = lonely_settings.model_dump(exclude={"config"})
    data.update(submit_replicas=replicas, submit_replicas_timeout_s=timeout)
    with pytest.raises(ValidationError, match="submit_replicas"):
        Settings(**data)
