"""Reading bucket notifications: the three shapes S3 and MinIO send, keys decoded, what identifies a version."""

import json
import logging

import pytest

from pipeq.ingest.events import MalformedEvent, ObjectVersion, created_objects, parse_event
from tests.support.s3_events import REMOVED, record, redis_entry, webhook_body


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
