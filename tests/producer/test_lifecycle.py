"""The lifecycle options at submission (priority, deadline or ttl, webhook events, result_ttl) and their bad values,
and jobs that expire in the queue with no worker to see them."""

import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from pipeq.config.settings import Settings
from pipeq.core.records import RecordStore
from pipeq.producer import Client, InvalidJob
from tests.support.settings import make_settings, model_name

TEXT = "text-classification"
MODEL = model_name(TEXT)
HOOK = "https://hooks.example.com/pipeq"


@pytest.fixture
def idle(redis_url, s3_endpoint, tiny_models, redis_db) -> Settings:
    """Settings on a Redis pair no worker reads: jobs stay queued."""
    return make_settings(redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db, result_ttl=3600)


@pytest.fixture
def producer(idle: Settings):
    client = Client(idle)
    yield client
    client.close()


def test_lifecycle_options_reach_the_record(producer: Client):
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    job_id = producer.submit(
        TEXT,
        "steer me",
        model=MODEL,
        priority="high",
        deadline=deadline.isoformat(),
        webhook=HOOK,
        webhook_events=["started", "completed", "started"],
        result_ttl=600,
    )
    record = producer.status(job_id)
    assert (record.priority, record.deadline, record.webhook_events) == ("high", deadline, ("started", "completed"))
    assert record.result_ttl == 600
    assert 0 < producer.store.redis.ttl(RecordStore.key(job_id)) <= 600  # kept no longer than the job asked


def test_a_ttl_becomes_a_deadline_from_submission(producer: Client):
    job_id = producer.submit(TEXT, "soon", model=MODEL, ttl=30)
    record = producer.status(job_id)
    assert timedelta(seconds=29) < record.deadline - record.submitted_at <= timedelta(seconds=30)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"priority": "urgent"}, "low, normal, high"),
        ({"priority": 9}, "low, normal, high"),
        ({"webhook": HOOK, "webhook_events": ["started", "done"]}, "started, progress, completed"),
        ({"webhook": HOOK, "webhook_events": []}, "non-empty list"),
        ({"webhook": HOOK, "webhook_events": "started"}, "non-empty list"),
        ({"webhook_events": ["started"]}, "give a webhook too"),
        ({"ttl": 0}, "above 0"),
        ({"ttl": -5}, "above 0"),
        ({"ttl": True}, "above 0"),
        ({"ttl": "10"}, "above 0"),
        ({"ttl": 10**9}, "exceeds result_ttl"),
        ({"deadline": "2020-01-01T00:00:00Z"}, "in the past"),
        ({"deadline": "2999-01-01T00:00:00Z"}, "more than result_ttl"),
        ({"deadline": "tomorrow"}, "not an ISO 8601 time"),
        ({"deadline": "9" * 10_000}, "not an ISO 8601 time"),  # long strings are not even parsed
        ({"deadline": "2030-01-01T00:00:00"}, "no time zone"),
        ({"deadline": 12}, "a datetime or an ISO 8601 string"),
        ({"deadline": "2030-01-01T00:00:00Z", "ttl": 5}, "not both"),
        ({"result_ttl": 0}, "from 1 to 3600"),
        ({"result_ttl": 3601}, "from 1 to 3600"),
        ({"result_ttl": 1.5}, "from 1 to 3600"),
    ],
)
def test_bad_lifecycle_options_are_refused_saying_why(producer: Client, options: dict, says: str):
    with pytest.raises(InvalidJob, match=says):
        producer.submit(TEXT, "refused", model=MODEL, **options)
    with redis.Redis.from_url(producer.settings.broker_url) as broker:
        assert broker.llen("pipeq") == 0  # nothing enqueued


def test_a_queued_job_past_its_deadline_reads_expired_and_its_waiter_is_told(producer: Client):
    job_id = producer.submit(TEXT, "nobody will run me", model=MODEL, ttl=0.5)
    assert producer.status(job_id).state == "queued"
    began = time.monotonic()
    record = producer.wait(job_id, timeout=30)  # no worker: the client sees the deadline pass itself
    assert time.monotonic() - began < 30
    assert record.state == "expired" and record.error.type == "Expired" and "deadline" in record.error.message
    assert record.attempts == 0 and record.started_at is None
    assert producer.status(job_id) == record  # stored so, final
    assert producer.cancel(job_id).state == "expired"  # a final job keeps its state


def test_a_canceled_queued_job_is_final_for_waiters(producer: Client):
    job_id = producer.submit(TEXT, "changed my mind", model=MODEL)
    canceled = producer.cancel(job_id)
    assert canceled.state == "canceled" and canceled.finished_at is not None
    assert producer.wait(job_id, timeout=5).state == "canceled"
    assert producer.cancel(job_id) == producer.status(job_id)  # again: unchanged
