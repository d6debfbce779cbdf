"""Job ids are idempotency keys without surprise (issue 10): the same payload again returns the existing job; another
payload under the same id is a conflict that changes nothing."""

import pytest

from pipeq.core.records import JobRecord
from pipeq.producer import Client, InvalidJob, JobConflict
from tests.support.settings import BUCKET, make_settings, model_name

TEXT = "text-classification"


@pytest.fixture(scope="module")
def offline_services(redis_url, s3_endpoint, tiny_models, new_redis_db):
    """A client whose queue no worker consumes, and its broker: one Redis database pair for the module."""
    db = new_redis_db()
    client = Client(make_settings(redis_url, s3_endpoint, tiny_models, db=db))
    broker = client.store.redis.__class__.from_url(f"{redis_url}/{db}")
    yield client, broker
    client.close()
    broker.close()


@pytest.fixture
def offline(offline_services):
    """The offline client, its records and queue emptied, and a count of the jobs waiting in the queue."""
    client, broker = offline_services
    client.store.redis.flushdb()
    broker.flushdb()
    return client, lambda: broker.llen("pipeq")


def records(client: Client) -> int:
    return len(client.store.redis.keys("pipeq:job:*"))


def test_the_same_payload_twice_returns_the_same_job_once(offline):
    client, queued = offline
    parameters = {"top_k": 2, "function_to_apply": "softmax"}
    first = client.submit(TEXT, "hello", parameters=parameters, job_id="order-1")
    before = client.status(first)
    again = client.submit(
        TEXT, "hello", model=model_name(TEXT), parameters=dict(reversed(parameters.items())), job_id="order-1"
    )
    assert first == again == "order-1"
    assert (queued(), records(client)) == (1, 1)
    assert client.status(first) == before


def test_media_shorthands_and_their_explicit_references_are_the_same_payload(offline):
    client, queued = offline
    uri, task, prompt = f"s3://{BUCKET}/cat.png", "image-text-to-text", "<image> What is this?"
    client.submit(task, {"images": uri, "text": prompt}, model=model_name(task), job_id="refs-1")
    explicit = {"text": prompt, "images": {"kind": "s3", "uri": uri, "version_id": None}}
    assert client.submit(task, explicit, model=model_name(task), job_id="refs-1") == "refs-1"
    assert queued() == 1


@pytest.mark.parametrize(
    "change",
    [
        {"input": "goodbye"},
        {"parameters": {"top_k": 3}},
        {"webhook": "https://attacker.example/hook"},
        {"model": "not-cached"},
        {"input": f"s3://{BUCKET}/other.txt"},
    ],
)
def test_another_payload_under_an_existing_id_is_a_conflict_that_changes_nothing(offline, change):
    client, queued = offline
    first = {"task": TEXT, "input": "hello", "parameters": {"top_k": 2}, "model": model_name(TEXT)}
    client.submit(**first, job_id="order-2")
    before = client.status("order-2")
    with pytest.raises(JobConflict) as conflict:
        client.submit(**{**first, **change}, job_id="order-2")
    assert isinstance(conflict.value, InvalidJob)
    assert "'order-2' already exists with another payload" in str(conflict.value)
    assert "Choose a new job id" in str(conflict.value)
    assert client.status("order-2") == before
    assert (queued(), records(client)) == (1, 1)


def test_a_conflict_in_submit_many_enqueues_none_of_the_list(offline):
    client, queued = offline
    client.submit(TEXT, "hello", job_id="taken")
    with pytest.raises(JobConflict, match="'taken'"):
        client.submit_many(TEXT, ["first", "goodbye", "third"], job_ids=["fresh-1", "taken", "fresh-3"])
    assert (queued(), records(client)) == (1, 1)
    with pytest.raises(JobConflict, match="'twice'"):
        client.submit_many(TEXT, ["one", "two"], job_ids=["twice", "twice"])
    assert (queued(), records(client)) == (1, 1)
    assert client.submit_many(TEXT, ["hello", "new"], job_ids=["taken", "fresh-1"]) == ["taken", "fresh-1"]
    assert (queued(), records(client)) == (2, 2)


@pytest.mark.usefixtures("worker")
def test_a_finished_job_still_refuses_another_payload(client):
    job_id = client.submit(TEXT, "the worker runs this one", model=model_name(TEXT))
    done = client.wait(job_id, timeout=60)
    assert done.state == "succeeded"
    with pytest.raises(JobConflict):
        client.submit(TEXT, "and then something else", model=model_name(TEXT), job_id=job_id)
    assert client.submit(TEXT, "the worker runs this one", model=model_name(TEXT), job_id=job_id) == job_id
    assert client.status(job_id) == done


def test_the_payload_digest_is_the_last_field_of_a_record():
    """The record store keeps a stored digest through later writes by finding it at the end of the record's JSON."""
    assert list(JobRecord.model_fields)[-1] == "payload_sha256"
