"""Reading bucket notifications: the three shapes S3 and MinIO send, keys decoded, what identifies a version; and
the three shapes an S3 event reaches an SQS queue in (S3's own, an SNS envelope, EventBridge)."""

import json
import logging

import pytest

from pipeq.config.settings import IngestRule
from pipeq.ingest.events import MalformedEvent, ObjectVersion, created_objects, parse_event, sqs_event
from pipeq.ingest.rules import jobs_for_event
from tests.support.s3_events import (
    REMOVED,
    TOPIC_ARN,
    eventbridge_event,
    record,
    redis_entry,
    sns_envelope,
    sns_subscription_confirmation,
    webhook_body,
)


def test_minio_and_s3_formats_announce_the_same_object_with_its_key_decoded():
    key = "reports/Q3 résumé ✓ 100%+.txt"
    created = record("media", key, '"0123abcd"')
    assert created["s3"]["object"]["key"] == "reports%2FQ3+r%C3%A9sum%C3%A9+%E2%9C%93+100%25%2B.txt"

    for event in (json.loads(redis_entry(created)), {"Records": [created]}, webhook_body(created)):
        assert created_objects(event) == [ObjectVersion("media", key, "0123abcd")]  # eTag unquoted, as in listings
    assert created_objects({"Service": "Amazon S3", "Event": "s3:TestEvent"}) == []


def test_an_etag_identifies_a_version_else_the_version_id_else_the_sequencer():
    event = {
        "Records": [
            record("media", "a", "e1", version_id="v-1"),
            record("media", "b", None, version_id="v-2"),
            record("media", "c", None),
        ]
    }
    assert created_objects(event) == [
        ObjectVersion("media", "a", "e1", "v-1"),
        ObjectVersion("media", "b", "v-2", "v-2"),
        ObjectVersion("media", "c", "17F5A3C2D1E0B9A8"),  # the sequencer tests.support.s3_events writes
    ]


def test_only_created_objects_are_announced():
    event = {
        "Records": [
            record("media", "a", "e1", event_name=REMOVED),
            record("media", "b", None, event_name="ObjectRemoved:DeleteMarkerCreated"),  # S3 style, no "s3:"
            record("media", "c", "e3", event_name="s3:ObjectAccessed:Get"),
            record("media", "d", "e4", event_name="ObjectCreated:CompleteMultipartUpload"),  # S3 style
            record("media", "e", "e5", event_name="s3:ObjectCreated:Copy"),
        ]
    }
    assert created_objects(event) == [ObjectVersion("media", "d", "e4"), ObjectVersion("media", "e", "e5")]


def test_a_malformed_record_is_logged_and_skipped_and_the_others_still_count(caplog):
    no_tag = record("media", "reports/c.txt", None)
    del no_tag["s3"]["object"]["sequencer"]
    event = {
        "Records": [
            "not a record",
            {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {}}},
            {"s3": {}},
            no_tag,
            {"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": ""}, "object": {"key": "k"}}},
            record("media", "reports/a.txt", "e1"),
        ]
    }
    with caplog.at_level(logging.WARNING, logger="pipeq.ingest"):
        assert created_objects(event) == [ObjectVersion("media", "reports/a.txt", "e1")]
    assert [r.getMessage() for r in caplog.records] == [
        "skipping record 0 of an event: a record must be a JSON object, not str",
        "skipping record 1 of an event: s3:ObjectCreated:Put record without s3.bucket.name and s3.object.key",
        "skipping record 2 of an event: the record has no eventName",
        "skipping record 3 of an event: s3:ObjectCreated:Put record for s3://media/reports/c.txt "
        "has no eTag, versionId or sequencer",
        "skipping record 4 of an event: s3:ObjectCreated:Put record with an empty or non-string bucket name or key",
    ]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ([1, 2], "an event must be a JSON object (or a list of them), not int"),
        ({"Records": "nope"}, 'an event needs a "Records" list'),
        ({"hello": "world"}, 'an event needs a "Records" list'),
        ("s3://media/a.txt", "an event must be a JSON object (or a list of them), not str"),
    ],
)
def test_an_event_that_is_not_a_notification_is_refused(event, message):
    with pytest.raises(MalformedEvent) as refused:
        created_objects(event)
    assert str(refused.value).startswith(message)


def test_parse_event_reads_json_and_refuses_anything_else():
    assert parse_event(b'{"Records": []}') == {"Records": []}
    assert parse_event('[{"Event": []}]') == [{"Event": []}]
    for body in (b'{"Records": [', b"\xff\xfe", ""):
        with pytest.raises(MalformedEvent, match=r"^the event is not JSON: "):
            parse_event(body)


def test_the_three_shapes_of_an_sqs_message_announce_the_same_object_and_make_the_same_job():
    key = "in/a b é ✓ 100%+.wav"
    direct = {"Records": [record("media", key, '"b1946ac92492d2347c6235b4d2611184"', version_id="IYV3p45BT0ac8h")]}
    bodies = [
        json.dumps(direct),
        sns_envelope(direct),
        eventbridge_event("media", key, "b1946ac92492d2347c6235b4d2611184", version_id="IYV3p45BT0ac8h"),
    ]
    announced = ObjectVersion("media", key, "b1946ac92492d2347c6235b4d2611184", "IYV3p45BT0ac8h")
    assert [created_objects(sqs_event(body)) for body in bodies] == [[announced]] * 3
    rules = [IngestRule(bucket="media", prefix="in/", task="automatic-speech-recognition")]
    jobs = [jobs_for_event(sqs_event(body.encode()), rules) for body in bodies]
    assert [job.job_id(b"k" * 32) for [job] in jobs] == [jobs[0][0].job_id(b"k" * 32)] * 3
    assert {job.uri for [job] in jobs} == {f"s3://media/{key}"}


def test_an_eventbridge_key_is_taken_as_it_is_and_a_version_is_its_etag_else_version_id_else_sequencer():
    [etag] = created_objects(sqs_event(eventbridge_event("media", "in/x+y%41.wav", "e1", version_id="v1")))
    [version] = created_objects(sqs_event(eventbridge_event("media", "in/b", None, version_id="v2")))
    [sequenced] = created_objects(sqs_event(eventbridge_event("media", "in/c", None)))
    assert etag == ObjectVersion("media", "in/x+y%41.wav", "e1", "v1")  # no '+' or %XX decoding: not encoded
    assert version == ObjectVersion("media", "in/b", "v2", "v2")
    assert sequenced == ObjectVersion("media", "in/c", "617f08299329d189")


def test_sqs_messages_that_announce_no_object_are_to_be_acknowledged(caplog):
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-01-01T00:00:00Z", "Bucket": "media"}
    unsubscribed = json.loads(sns_subscription_confirmation()) | {"Type": "UnsubscribeConfirmation"}
    with caplog.at_level(logging.INFO, logger="pipeq.ingest"):
        assert sqs_event(json.dumps(test_event)) is None
        assert sqs_event(sns_envelope(test_event)) is None
        assert sqs_event(eventbridge_event("media", "in/a", "e1", detail_type="Object Deleted")) is None
        assert sqs_event(eventbridge_event("media", "in/a", "e1", detail_type="Object Restore Completed")) is None
        assert sqs_event(json.dumps(unsubscribed)) is None
        assert caplog.records[-1].levelno == logging.INFO
        assert sqs_event(sns_subscription_confirmation()) is None
    warning = caplog.records[-1]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(f"SNS topic {TOPIC_ARN} asks this queue to confirm its subscription")
    assert "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=" in warning.getMessage()
    assert sqs_event(json.dumps({"Records": []})) == {"Records": []}  # a notification of nothing: no jobs


def _eventbridge(**changes) -> str:
    event = json.loads(eventbridge_event("media", "in/a", "e1"))
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = event
        for name in parents:
            target = target[name]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return json.dumps(event)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "the event is not JSON"),
        ("[1, 2]", "an SQS message must hold a JSON object, not list"),
        ('"s3://media/a.wav"', "an SQS message must hold a JSON object, not str"),
        ('{"hello": "world"}', "not an S3 notification (Records), an SNS envelope"),
        ('{"Records": {"s3": {}}}', 'an S3 notification\'s "Records" must be a list'),
        (
            json.dumps(json.loads(sns_envelope({})) | {"Message": "{not json"}),
            f"the Message of an SNS Notification from {TOPIC_ARN}: the event is not JSON",
        ),
        (
            sns_envelope(json.loads(sns_envelope({"Records": []}))),
            f"the Message of an SNS Notification from {TOPIC_ARN}: not",
        ),
        (
            json.dumps(json.loads(sns_envelope({})) | {"Message": {"Records": []}}),
            "an SNS Notification without a Message",
        ),
        (json.dumps(json.loads(sns_envelope({})) | {"Type": "Other"}), "an SNS message of type 'Other'"),
        (_eventbridge(source="aws.ec2"), "an EventBridge event from 'aws.ec2', not from aws.s3"),
        (_eventbridge(detail__object__key=None), "an EventBridge Object Created event without detail.bucket.name"),
        (_eventbridge(detail__bucket="media"), "an EventBridge Object Created event without detail.bucket.name"),
        (_eventbridge(detail__object__key=""), "an EventBridge Object Created event with an empty or non-string"),
        (_eventbridge(detail__object__key="\ud800"), "an EventBridge Object Created event whose key is not valid"),
        (
            _eventbridge(detail__object__etag=None, detail__object__sequencer=None),
            "ObjectCreated:PutObject record for s3://media/in/a has no eTag, versionId or sequencer",
        ),
    ],
)
def test_an_sqs_message_that_is_not_a_notification_is_refused(body, message):
    with pytest.raises(MalformedEvent) as refused:
        sqs_event(body)
    assert str(refused.value).startswith(message)
