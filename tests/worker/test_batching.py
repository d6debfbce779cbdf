"""Micro-batching across jobs, and failures that stay with their own job."""

import pytest

from devtools.media import encode_audio, picture, speech, truncated
from pipeq.core.contract import Job, TextInput
from pipeq.core.messaging import TASK_NAME
from tests.support.compare import same
from tests.support.settings import MAX_MEDIA_BYTES, model_name

pytestmark = pytest.mark.usefixtures("worker")
TEXT = "text-classification"


def texts(n: int) -> list[str]:
    words = "the service was quick and friendly but the food arrived cold and bland".split(" ")
    return [" ".join(words[: 1 + (i * 7) % len(words)]) * (1 + i % 3) for i in range(n)]


def test_many_jobs_run_in_micro_batches_with_the_results_of_batch_size_one(client, reference):
    inputs = texts(48)
    ids = client.submit_many(TEXT, inputs, model=model_name(TEXT))
    records = client.wait_many(ids, timeout=120)
    sizes = [records[job_id].micro_batch_jobs for job_id in ids]
    assert max(sizes) > 1, sizes
    pipe = reference(TEXT)
    for text, job_id in zip(inputs, ids, strict=True):
        assert records[job_id].state == "succeeded"
        assert same(records[job_id].result, pipe(text, batch_size=1))


def test_feature_extraction_in_a_batch_keeps_each_texts_own_token_count(client, reference):
    inputs = ["short", "a considerably longer sentence with many more tokens in it than the first"]
    task = "feature-extraction"
    ids = client.submit_many(task, inputs, model=model_name(task))
    records = client.wait_many(ids, timeout=60)
    for text, job_id in zip(inputs, ids, strict=True):
        assert same(records[job_id].result, reference(task)(text))


def test_bad_media_fail_their_own_jobs_and_the_rest_of_the_batch_succeeds(client, upload, s3):
    audio = encode_audio(speech("good audio"), "WAV")
    cases = {
        "good": upload(audio, ".wav"),
        "missing": "s3://media/no-such-key.wav",
        "unreadable": upload(truncated(audio), ".wav"),
        "too large": upload(b"\0" * (MAX_MEDIA_BYTES + 1), ".wav"),
        "not audio": upload(picture(), ".png"),
        "good too": upload(audio, ".wav"),
    }
    task = "automatic-speech-recognition"
    ids = client.submit_many(task, list(cases.values()), model=model_name(task))
    records = dict(zip(cases, (client.wait_many(ids, timeout=120)[i] for i in ids), strict=True))
    assert records["good"].state == records["good too"].state == "succeeded"
    assert max(record.micro_batch_jobs for record in records.values()) > 1
    expected = {
        "missing": ("MediaNotFound", "s3://media/no-such-key.wav"),
        "unreadable": ("UnreadableMedia", "unreadable audio"),
        "too large": ("MediaTooLarge", f"limit is {MAX_MEDIA_BYTES}"),
        "not audio": ("UnreadableMedia", "unreadable audio"),
    }
    for name, (error_type, message) in expected.items():
        assert records[name].state == "failed"
        assert records[name].error.type == error_type
        assert message in records[name].error.message


def test_an_input_the_pipeline_rejects_fails_alone(client, reference):
    inputs = ["fine", {"text_pair": "a pair with no first text"}, "also fine"]
    ids = client.submit_many(TEXT, inputs, model=model_name(TEXT))
    records = client.wait_many(ids, timeout=60)
    bad = records[ids[1]]
    assert bad.state == "failed"
    assert bad.error.type == "PipelineError"
    for i in (0, 2):
        assert same(records[ids[i]].result, reference(TEXT)(inputs[i]))


def test_a_job_that_breaks_the_contract_is_failed_by_the_worker(client):
    job = Job(
        task="automatic-speech-recognition",
        model=model_name("automatic-speech-recognition"),
        input=TextInput(text="text is not audio"),
    )
    client.celery.send_task(TASK_NAME, args=[job.model_dump(mode="json")], task_id=job.id, queue="pipeq")
    from pipeq.core.records import JobRecord

    client.store.create(
        [JobRecord(state="queued", id=job.id, task=job.task, model=job.model, submitted_at=job.submitted_at)]
    )
    record = client.wait(job.id, timeout=60)
    assert record.state == "failed"
    assert record.error.type == "InvalidJob"
    assert "takes audio, not text" in record.error.message


def test_a_message_that_is_not_a_job_is_failed_not_retried(client):
    client.celery.send_task(TASK_NAME, args=[{"v": 1, "task": "nope"}], task_id="not-a-job-1", queue="pipeq")
    from pipeq.core.records import JobRecord, now

    client.store.create([JobRecord(state="queued", id="not-a-job-1", task="?", model="?", submitted_at=now())])
    record = client.wait("not-a-job-1", timeout=60)
    assert record.state == "failed"
    assert record.error.type == "InvalidJob"


def test_a_model_that_cannot_be_loaded_fails_its_jobs_with_the_reason(client):
    record = client.wait(client.submit(TEXT, "hello", model="not-cached"), timeout=60)
    assert record.state == "failed"
    assert record.error.type == "ModelUnavailable"
    assert "pipeq-tests/not-in-any-cache" in record.error.message
