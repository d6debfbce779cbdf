"""Results too large for Redis go to object storage; clients get them back the same way."""

import json

import pytest

from tests.support.compare import same
from tests.support.settings import MAX_INLINE_RESULT_BYTES, RESULTS_BUCKET, model_name

pytestmark = pytest.mark.usefixtures("worker")
TASK = "feature-extraction"


def test_a_large_result_is_stored_in_object_storage_and_read_back(client, reference, s3):
    long_text = "embeddings of many tokens take room " * 20
    short_text = "tiny"
    ids = client.submit_many(TASK, [long_text, short_text], model=model_name(TASK))
    records = client.wait_many(ids, timeout=60)
    large, small = (records[job_id] for job_id in ids)

    stored = client.store.get(large.id)
    assert stored.result is None
    assert stored.result_ref == f"s3://{RESULTS_BUCKET}/{large.id}.json"
    body = s3.get_object(Bucket=RESULTS_BUCKET, Key=f"{large.id}.json")["Body"].read()
    assert len(body) > MAX_INLINE_RESULT_BYTES
    assert json.loads(body) == large.result
    assert same(large.result, reference(TASK)(long_text))
    assert client.status(large.id).result == large.result

    assert client.store.get(small.id).result_ref is None
    assert same(small.result, reference(TASK)(short_text))
