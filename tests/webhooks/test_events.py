"""Webhook events as delivered: numbered in order, each its own signed delivery; and delivery messages that name an
event the job did not ask for, an unknown event, a bad sequence or a body that was never stored are refused."""

import base64

import pytest

from pipeq.config.settings import Settings, Webhooks
from pipeq.core.records import JobRecord, Progress, RecordStore, now
from pipeq.core.webhook_events import enqueue_events, events_key
from pipeq.webhooks.delivery import Deliverer, create_webhooks_app
from pipeq.webhooks.http import PermanentFailure
from pipeq.webhooks.payload import encode
from pipeq.webhooks.signing import verify
from tests.support.receiver import Receiver

SECRET = "whsec_" + base64.b64encode(b"pipeq webhook events, 32 bytes!!").decode()


@pytest.fixture
def event_settings(settings: Settings, redis_url: str, redis_db: int) -> Settings:
    return settings.model_copy(
        update={
            "broker_url": f"{redis_url}/{redis_db}",
            "result_backend": f"{redis_url}/{redis_db + 1}",
            "webhooks": Webhooks(secret=SECRET, allow_private=True, timeout=5),
        }
    )


@pytest.fixture
def receiver():
    with Receiver() as receiving:
        yield receiving


def running(job_id: str, url: str, events: tuple[str, ...]) -> JobRecord:
    return JobRecord(
        state="running",
        id=job_id,
        task="text-classification",
        model="m",
        submitted_at=now(),
        started_at=now(),
        webhook=url,
        webhook_events=events,
    )


def queue(settings: Settings, store: RecordStore, events: list) -> list[int]:
    return enqueue_events(create_webhooks_app(settings), settings.webhooks.queue, store.redis, 60, events)


def test_each_event_is_numbered_and_sent_as_its_own_signed_delivery(event_settings, receiver):
    store = RecordStore(event_settings.result_backend)
    record = running("job-events", receiver.url, ("started", "progress", "completed"))
    store.write([record])
    progress = record.model_copy(update={"progress": Progress(fraction=0.5, detail="chunk 2 of 4", updated_at=now())})
    started, progressed = encode(record, "started"), encode(progress, "progress")
    numbers = queue(event_settings, store, [("job-events", "started", started), ("job-events", "progress", progressed)])
    store.write([record.ended("canceled", "Canceled", "canceled by its producer")])
    numbers += queue(event_settings, store, [("job-events", "completed", None)])
    assert numbers == [1, 2, 3]

    deliverer = Deliverer(event_settings)
    for number, event in zip(numbers, ("started", "progress", "completed"), strict=True):
        assert deliverer.attempt("job-events", None, event, number)
        assert not deliverer.attempt("job-events", None, event, number)  # sent once
    bodies = [verify(request.headers, request.body, SECRET) for request in receiver.requests]
    assert [(body["event"], body["sequence"], body["status"]) for body in bodies] == [
        ("started", 1, "running"),
        ("progress", 2, "running"),
        ("completed", 3, "canceled"),
    ]
    assert bodies[1]["progress"]["detail"] == "chunk 2 of 4"
    ids = [request.headers["webhook-id"] for request in receiver.requests]
    assert ids == ["job-events:1", "job-events:2", "job-events"]
    assert store.redis.hkeys(events_key("job-events")) == [b"sequence"]  # delivered bodies are not kept


@pytest.mark.parametrize(
    ("event", "sequence", "says"),
    [
        ("progress", 1, "asked for the webhook events started"),  # not among the job's events
        ("finished", 1, "unknown webhook event"),
        ("started", 0, "a number from 1"),
        ("started", "1", "a number from 1"),
        ("started", 99, "no stored started event numbered 99"),
        ("started", None, "no stored started event"),
    ],
)
def test_forged_or_stale_event_deliveries_are_refused(event_settings, receiver, event, sequence, says):
    store = RecordStore(event_settings.result_backend)
    record = running("job-forged", receiver.url, ("started",))
    store.write([record])
    queue(event_settings, store, [("job-forged", "started", encode(record, "started"))])
    queue(event_settings, store, [("job-forged", "started", encode(record, "started"))])
    with pytest.raises(PermanentFailure, match=says):
        Deliverer(event_settings).attempt("job-forged", None, event, sequence)
    assert receiver.requests == []


def test_a_stored_body_of_another_event_is_refused(event_settings, receiver):
    store = RecordStore(event_settings.result_backend)
    record = running("job-swapped", receiver.url, ("started", "progress"))
    store.write([record])
    [number] = queue(event_settings, store, [("job-swapped", "started", encode(record, "started"))])
    with pytest.raises(PermanentFailure, match="not a progress event"):
        Deliverer(event_settings).attempt("job-swapped", None, "progress", number)
