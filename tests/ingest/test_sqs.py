"""Bucket notifications from SQS queues (the S3 server's own SQS): one job per object version, whatever the shape,
however often a message is delivered, however many ingesters read the queue, and whenever one is killed."""

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from pipeq.config.settings import IngestRule
from pipeq.core.storage import sqs_client
from pipeq.ingest.events import sqs_event
from pipeq.ingest.ingester import Ingester
from pipeq.ingest.rules import jobs_for_event
from pipeq.ingest.sqs import MAX_BACKOFF_S, SqsSource, backoff_s
from pipeq.ops import metrics
from pipeq.producer import Client
from tests.support.s3_events import (
    eventbridge_event,
    put,
    record,
    sns_envelope,
    sns_subscription_confirmation,
)
from tests.support.waiting import wait_until


@pytest.fixture
def rules(bucket: str) -> list[IngestRule]:
    """Audio under ``in/`` to speech recognition."""
    return [IngestRule(bucket=bucket, prefix="in/", task="automatic-speech-recognition")]


@pytest.fixture(scope="module")
def sqs(settings):
    client = sqs_client(settings)
    yield client
    client.close()


@pytest.fixture
def new_queue(sqs) -> Iterator[Callable[..., str]]:
    """Makes fresh queues (their URLs), ``visibility_s`` their visibility timeout; deleted after the test."""
    made: list[str] = []

    def new(visibility_s: int = 30) -> str:
        name = f"ingest-{uuid.uuid4().hex[:12]}"
        made.append(sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_s)})["QueueUrl"])
        return made[-1]

    yield new
    for url in made:
        sqs.delete_queue(QueueUrl=url)


def counted(outcome: str) -> float:
    return metrics.ingest_events.labels("sqs", outcome)._value.get()


def messages_left(sqs, url: str) -> tuple[int, int]:
    """(visible, in flight): the messages not deleted."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attributes[names[0]]), int(attributes[names[1]])


def send(sqs, url: str, *bodies: str) -> None:
    for start in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])]
        assert not sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")


def drain(source: SqsSource, url: str) -> None:
    """Receive until a receive returns nothing (the source's ``wait_s`` is 0)."""
    while source.receive(url):
        pass


@contextmanager
def running(*sources: SqsSource) -> Iterator[None]:
    stop = threading.Event()
    threads = [threading.Thread(target=source.run, args=(stop,)) for source in sources]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for source in sources:
            source.close()


def created(s3, bucket: str, key: str, body: bytes = b"RIFF") -> dict[str, Any]:
    """Put an object; S3's notification of it."""
    return {"Records": [put(s3, bucket, key, body)]}


def job_ids(offline, *bodies: str) -> list[str]:
    """The ids of the jobs the messages ``bodies`` ask for, as the ingester derives them."""
    jobs = [job for body in bodies for job in jobs_for_event(sqs_event(body), offline.ingester.rules)]
    return sorted({job.job_id(offline.ingester.id_key) for job in jobs})


def test_objects_put_under_a_rules_prefix_become_one_job_each(offline, s3, bucket, sqs, new_queue):
    """The S3 server's own notifications: its test event first, then one message per PUT, keys URL-encoded."""
    url = new_queue()
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    only_in = {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"}]}}
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": only_in}]
        },
    )
    keys = ["in/a b é.wav", "in/deeper/ü+1 100%.wav", "in/ça/✓.wav"]
    for key in [*keys, "out/not-announced.wav"]:
        s3.put_object(Bucket=bucket, Key=key, Body=b"RIFF")
    s3.put_object(Bucket=bucket, Key=keys[0], Body=b"RIFF")  # the same content again: the same ETag, the same job

    source = SqsSource(offline.ingester, [url], wait_s=1)
    with running(source):
        wait_until(lambda: messages_left(sqs, url) == (0, 0), message="the queue was not drained")

    assert sorted(job["input"]["uri"] for job in offline.queued()) == sorted(f"s3://{bucket}/{key}" for key in keys)
    assert all(job["task"] == "automatic-speech-recognition" for job in offline.queued())
    assert offline.records() == 3


def test_the_same_message_twice_makes_one_job(offline, s3, bucket, sqs, new_queue):
    url = new_queue()
    body = json.dumps(created(s3, bucket, "in/twice.wav"))
    send(sqs, url, body, body)
    submitted, duplicates = counted("submitted"), counted("duplicate")

    source = SqsSource(offline.ingester, [url], wait_s=0)
    drain(source, url)
    source.close()

    assert [job["id"] for job in offline.queued()] == job_ids(offline, body)
    assert (counted("submitted") - submitted, counted("duplicate") - duplicates) == (1, 1)
    assert messages_left(sqs, url) == (0, 0)


def test_an_ingester_killed_between_receive_and_delete_loses_nothing_and_duplicates_nothing(
    offline, s3, bucket, sqs, new_queue
):
    url = new_queue(visibility_s=1)
    unhandled = json.dumps(created(s3, bucket, "in/received-then-killed.wav"))
    send(sqs, url, unhandled)
    [_] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)["Messages"]  # an ingester that died right after
    undeleted = json.dumps(created(s3, bucket, "in/submitted-then-killed.wav"))
    send(sqs, url, undeleted)
    dying = SqsSource(offline.ingester, [url], wait_s=0)
    dying.delete = lambda url, messages: None  # it submits the jobs, and dies before deleting the message
    assert dying.receive(url) == 1
    dying.close()
    assert len(offline.queued()) == 1
    duplicates = counted("duplicate")

    survivor = SqsSource(offline.ingester, [url], wait_s=1)
    with running(survivor):  # both messages come back after the queue's visibility timeout, 1 s
        wait_until(lambda: messages_left(sqs, url) == (0, 0), message="the queue was not drained")

    assert sorted(job["id"] for job in offline.queued()) == job_ids(offline, unhandled, undeleted)
    assert counted("duplicate") - duplicates == 1
    assert offline.records() == 2


def test_a_message_whose_jobs_cannot_be_submitted_for_redis_is_received_again_once_redis_answers(
    offline, s3, bucket, sqs, new_queue, caplog, monkeypatch
):
    """...and nothing is received while Redis does not answer, so an outage spends no message's receive count."""
    monkeypatch.setattr("pipeq.ingest.sqs.RETRY_SECONDS", 0.2)
    url = new_queue(visibility_s=1)
    body = json.dumps(created(s3, bucket, "in/redis-was-down.wav"))
    send(sqs, url, body)
    handle_event = offline.ingester.handle_event
    calls: list[str] = []

    def down_once(event: Any, source: str) -> list[str]:
        if "handle refused" not in calls:
            calls.append("handle refused")
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        calls.append("handle")
        return handle_event(event, source)

    class Probe:
        def ping(self) -> None:
            if "ping refused" not in calls:
                calls.append("ping refused")
                raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
            calls.append("ping")

        def close(self) -> None:
            pass

    offline.ingester.handle_event = down_once
    source = SqsSource(offline.ingester, [url], wait_s=1)
    source._probes = [Probe()]
    receive_message = source.sqs.receive_message
    source.sqs.receive_message = lambda **kwargs: calls.append("receive") or receive_message(**kwargs)
    with caplog.at_level(logging.WARNING, logger="pipeq.ingest"), running(source):
        wait_until(lambda: messages_left(sqs, url) == (0, 0), message="the queue was not drained")

    assert [job["id"] for job in offline.queued()] == job_ids(offline, body)
    assert calls[:5] == ["receive", "handle refused", "ping refused", "ping", "receive"]
    assert calls.count("handle") == 1
    assert f"reading SQS queue {url}: ConnectionError: Error 111" in caplog.text


def test_two_ingesters_on_one_queue_make_one_job_per_object_version(offline, s3, bucket, sqs, new_queue):
    url = new_queue()
    bodies = [json.dumps(created(s3, bucket, f"in/{n:02d}.wav", f"take {n}".encode())) for n in range(20)]
    send(sqs, url, *bodies, *bodies)  # every notification twice: the two may each get one
    clients = [Client(offline.settings) for _ in range(2)]
    sources = [SqsSource(Ingester(offline.settings, client), [url], wait_s=1, batch=3) for client in clients]
    with running(*sources):
        wait_until(lambda: messages_left(sqs, url) == (0, 0), message="the queue was not drained")
    for client in clients:
        client.close()

    assert sorted(job["id"] for job in offline.queued()) == job_ids(offline, *bodies)
    assert offline.records() == 20


def test_sns_envelopes_and_eventbridge_events_make_the_jobs_s3_notifications_make(offline, s3, bucket, sqs, new_queue):
    url = new_queue()
    direct = created(s3, bucket, "in/direct é.wav")
    through_sns = created(s3, bucket, "in/through sns.wav")
    response = s3.put_object(Bucket=bucket, Key="in/from eventbridge+.wav", Body=b"EB")
    from_eventbridge = eventbridge_event(bucket, "in/from eventbridge+.wav", response["ETag"], size=2)
    direct_key = direct["Records"][0]["s3"]["object"]["key"]
    assert direct_key == "in%2Fdirect+%C3%A9.wav"  # S3 encodes; EventBridge does not
    etag = direct["Records"][0]["s3"]["object"]["eTag"]
    send(
        sqs,
        url,
        json.dumps(direct),
        sns_envelope(through_sns),
        from_eventbridge,
        sns_envelope(direct),  # the first object again, in the two other shapes
        eventbridge_event(bucket, "in/direct é.wav", etag),
    )
    submitted, duplicates = counted("submitted"), counted("duplicate")

    source = SqsSource(offline.ingester, [url], wait_s=0)
    drain(source, url)
    source.close()

    queued = offline.queued()
    assert sorted(job["id"] for job in queued) == job_ids(
        offline, json.dumps(direct), json.dumps(through_sns), from_eventbridge
    )
    assert sorted(job["input"]["uri"] for job in queued) == [
        f"s3://{bucket}/in/direct é.wav",
        f"s3://{bucket}/in/from eventbridge+.wav",
        f"s3://{bucket}/in/through sns.wav",
    ]
    assert (counted("submitted") - submitted, counted("duplicate") - duplicates) == (3, 2)
    assert messages_left(sqs, url) == (0, 0)


def test_test_events_and_subscription_messages_are_deleted_and_make_no_job(offline, sqs, new_queue, caplog):
    url = new_queue()
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-12-01T00:00:00Z", "Bucket": "media"}
    send(
        sqs,
        url,
        json.dumps(test_event),
        sns_envelope(test_event),
        sns_subscription_confirmation(),
        eventbridge_event("media", "in/gone.wav", "e1", detail_type="Object Deleted"),
    )
    unmatched, malformed = counted("unmatched"), counted("malformed")

    source = SqsSource(offline.ingester, [url], wait_s=0)
    with caplog.at_level(logging.WARNING, logger="pipeq.ingest"):
        drain(source, url)
    source.close()

    assert messages_left(sqs, url) == (0, 0)
    assert offline.queued() == []
    assert (counted("unmatched"), counted("malformed")) == (unmatched, malformed)
    [warning] = caplog.records
    assert "asks this queue to confirm its subscription" in warning.getMessage()


def test_a_body_that_is_not_a_notification_is_counted_and_hidden_for_the_redrive_policy(
    offline, s3, bucket, sqs, new_queue, caplog
):
    url = new_queue(visibility_s=1)
    fine = json.dumps(created(s3, bucket, "in/fine.wav"))
    send(sqs, url, "{not json", json.dumps({"hello": "world"}), fine)
    malformed = counted("malformed")

    source = SqsSource(offline.ingester, [url], wait_s=0)
    with caplog.at_level(logging.ERROR, logger="pipeq.ingest"):
        assert source.receive(url) == 3
    source.close()

    assert counted("malformed") - malformed == 2
    assert [job["id"] for job in offline.queued()] == job_ids(offline, fine)
    assert messages_left(sqs, url) == (0, 2)  # not deleted: in flight
    messages = sorted(r.getMessage() for r in caplog.records)
    assert all(" (received 1 times) is not a bucket notification; left to the queue's redrive" in m for m in messages)
    assert "the event is not JSON" in messages[0] + messages[1]
    time.sleep(1.2)  # past the queue's own visibility timeout: they stay hidden for 30 s
    assert sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []) == []
    assert messages_left(sqs, url) == (0, 2)


def test_the_backoff_doubles_with_each_receive_up_to_sqs_longest_visibility_timeout():
    assert [backoff_s(n) for n in (0, 1, 2, 3, 11)] == [30, 30, 60, 120, 30_720]
    assert backoff_s(12) == backoff_s(1000) == MAX_BACKOFF_S == 43_200


def test_several_queues_are_read_at_once(offline, s3, bucket, sqs, new_queue):
    urls = [new_queue(), new_queue()]
    bodies = [json.dumps(created(s3, bucket, f"in/queue-{n}.wav", f"{n}".encode())) for n in range(2)]
    for url, body in zip(urls, bodies, strict=True):
        send(sqs, url, body)
    source = SqsSource(offline.ingester, urls, wait_s=1)
    with running(source):
        wait_until(lambda: len(offline.queued()) == 2, message="the jobs of both queues were not queued")
    assert sorted(job["id"] for job in offline.queued()) == job_ids(offline, *bodies)


def test_a_source_needs_queues_and_sqs_limits(offline):
    for wrong in ({"queue_urls": []}, {"batch": 11}, {"batch": 0}, {"wait_s": 21}):
        with pytest.raises(ValueError):
            SqsSource(offline.ingester, **({"queue_urls": ["http://q"]} | wrong))


def test_records_that_no_rule_matches_make_no_job_and_are_deleted(offline, s3, bucket, sqs, new_queue):
    url = new_queue()
    send(sqs, url, json.dumps({"Records": [record(bucket, "out/elsewhere.wav", "e1")]}))
    unmatched = counted("unmatched")
    source = SqsSource(offline.ingester, [url], wait_s=0)
    drain(source, url)
    source.close()
    assert (offline.queued(), counted("unmatched") - unmatched) == ([], 1)
    assert messages_left(sqs, url) == (0, 0)
