"""Micro-batching across jobs, and failures that stay with their own job."""

import pytest

from devtools.media import encode_audio, picture, speech, truncated
from pipeq.core.contract import Job, TextInput
from pipeq.core.messaging import TASK_NAME
from tests.support.jobs import check, failed, run
from tests.support.settings import MAX_MEDIA_BYTES, model_name
from tests.support.waiting import wait_until

pytestmark = pytest.mark.usefixtures("worker")
TEXT = "text-classification"


def texts(n: int) -> list[str]:
    words = "the service was quick and friendly but the food arrived cold and bland".split(" ")
    return [" ".join(words[: 1 + (i * 7) % len(words)]) * (1 + i % 3) for i in range(n)]


def test_many_jobs_run_in_micro_batches_with_the_results_of_batch_size_one(client, reference):
    inputs = texts(48)
    records = run(client, TEXT, inputs)
    sizes = [record.micro_batch_jobs for record in records]
    assert max(sizes) > 1, sizes
    check(records, [reference(TEXT)(text, batch_size=1) for text in inputs])


def test_feature_extraction_in_a_batch_keeps_each_texts_own_token_count(client, reference):
    inputs = ["short", "a considerably longer sentence with many more tokens in it than the first"]
    task = "feature-extraction"
    records = run(client, task, inputs)
    check(records, [reference(task)(text) for text in inputs])
    assert len(records[0].result[0]) < len(records[1].result[0])  # tokens x hidden size: no padding kept


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
    records = dict(zip(cases, run(client, "automatic-speech-recognition", list(cases.values())), strict=True))
    assert records["good"].state == records["good too"].state == "succeeded"
    assert records["good"].result == records["good too"].result
    assert max(record.micro_batch_jobs for record in records.values()) > 1
    failed(records["missing"], "MediaNotFound", "s3://media/no-such-key.wav")
    failed(records["unreadable"], "UnreadableMedia", "unreadable audio")
    failed(records["too large"], "MediaTooLarge", f"limit is {MAX_MEDIA_BYTES}")
    failed(records["not audio"], "UnreadableMedia", "unreadable audio")


def test_an_input_the_pipeline_rejects_fails_alone(client, reference):
    inputs = ["fine", {"text_pair": "a pair with no first text"}, "also fine"]
    good, bad, good_too = run(client, TEXT, inputs)
    assert (bad.state, bad.error.type) == ("failed", "PipelineError")
    check([good, good_too], [reference(TEXT)("fine"), reference(TEXT)("also fine")])


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
    failed(client.wait(job.id, timeout=60), "InvalidJob", "takes audio, not text")


def test_a_message_that_is_not_a_job_is_failed_not_retried(client):
    client.celery.send_task(TASK_NAME, args=[{"v": 1, "task": "nope"}], task_id="not-a-job-1", queue="pipeq")
    from pipeq.core.records import JobRecord, now

    client.store.create([JobRecord(state="queued", id="not-a-job-1", task="?", model="?", submitted_at=now())])
    failed(client.wait("not-a-job-1", timeout=60), "InvalidJob", "the job is not valid")
    broker = client.store.redis.from_url(client.settings.broker_url)
    wait_until(lambda: not any(b"not-a-job-1" in message for message in broker.hvals("unacked")))  # acked
    assert all(b"not-a-job-1" not in message for message in broker.lrange("pipeq", 0, -1))  # not requeued


def test_a_model_that_cannot_be_loaded_fails_its_jobs_with_the_reason(client):
    record = client.wait(client.submit(TEXT, "hello", model="not-cached"), timeout=60)
    failed(record, "ModelUnavailable", "pipeq-tests/not-in-any-cache")
