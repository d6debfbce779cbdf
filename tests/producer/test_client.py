"""Submission: invalid jobs are refused before anything is enqueued; ids are idempotency keys."""

import pytest

from pipeq.producer import Client, InvalidJob, UnknownJob
from tests.support.settings import make_settings, model_name

TEXT = "text-classification"


@pytest.fixture
def offline_client(redis_url, s3_endpoint, tiny_models, redis_db):
    """A client whose broker database no worker consumes, so its queue can be inspected."""
    client = Client(make_settings(redis_url, s3_endpoint, tiny_models, db=redis_db))
    broker = client.store.redis.__class__.from_url(f"{redis_url}/{redis_db}")
    yield client, lambda: broker.llen("pipeq")
    client.close()


@pytest.mark.parametrize(
    ("task", "input", "kwargs", "message"),
    [
        (TEXT, "hi", {"model": "gpt-unknown"}, "not in the catalogue"),
        ("text-to-nothing", "hi", {}, "unknown task 'text-to-nothing'"),
        (TEXT, "hi", {"parameters": {"topk": 3}}, "unknown parameter(s) topk for task text-classification; known"),
        ("zero-shot-classification", "hi", {}, "needs the parameter(s) candidate_labels"),
        ("automatic-speech-recognition", "hello", {}, "takes audio, not text"),
        ("image-classification", b"x" * 300_000, {}, "exceeds the limit"),
        (TEXT, "s3://Not A Bucket/key", {}, "not an object reference"),
        (TEXT, 3.14, {}, "must be text, an s3:// reference, bytes or a dict"),
        (TEXT, {"text": "a", "question": "b"}, {}, "question not accepted"),
        (TEXT, "hi", {"job_id": "has spaces in it"}, "job id"),
        (TEXT, "hi", {"webhook": "ftp://example.com/hook"}, "http:// or https://"),
        ("feature-extraction", "hi", {"model": model_name(TEXT)}, "serves text-classification"),
        (
            "table-question-answering",
            {"query": "how many?"},
            {"model": model_name("table-question-answering")},
            "needs the dict input key(s) table",
        ),
        (
            "keypoint-matching",
            "s3://media/a.png",
            {"model": model_name("keypoint-matching")},
            "takes a dict input with the key(s) images",
        ),
        (
            "image-text-to-text",
            {"images": {"kind": "inline", "data": "%%"}},
            {"model": model_name("image-text-to-text")},
            "not valid base64",
        ),
    ],
)
def test_invalid_jobs_are_refused_before_anything_is_enqueued(offline_client, task, input, kwargs, message):
    client, queued = offline_client
    with pytest.raises(InvalidJob) as refused:
        client.submit(task, input, **kwargs)
    assert message in str(refused.value)
    assert queued() == 0


def test_one_invalid_job_refuses_the_whole_submit_many(offline_client):
    client, queued = offline_client
    with pytest.raises(InvalidJob):
        client.submit_many(TEXT, ["fine", "also fine", 42])
    assert queued() == 0


def test_a_task_without_a_model_goes_to_its_default_and_a_resubmitted_id_is_enqueued_once(offline_client):
    client, queued = offline_client
    first = client.submit(TEXT, "hello", job_id="order-1234")
    again = client.submit(TEXT, "hello", job_id="order-1234")
    assert first == again == "order-1234"
    assert queued() == 1
    record = client.status("order-1234")
    assert (record.state, record.model) == ("queued", model_name(TEXT))


def test_unknown_ids_are_reported(offline_client):
    client, _ = offline_client
    with pytest.raises(UnknownJob, match="never submitted"):
        client.status("nobody")
    with pytest.raises(UnknownJob):
        client.wait("nobody", timeout=1)


def test_waiting_past_the_timeout_raises(offline_client):
    client, _ = offline_client
    job_id = client.submit(TEXT, "nobody consumes this queue")
    with pytest.raises(TimeoutError, match=r"not done after 0\.3 s"):
        client.wait(job_id, timeout=0.3)


def test_task_aliases_reach_the_task_itself(offline_client):
    client, _ = offline_client
    job, queue = client.make_job("sentiment-analysis", "great", model=model_name(TEXT))
    assert (job.task, queue) == (TEXT, "pipeq")
