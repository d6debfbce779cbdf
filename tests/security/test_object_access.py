"""Jobs read objects only under the allowed prefixes (issue 10): refused at submission naming the setting; in the
worker, an object outside them fails its job exactly as a missing or forbidden one does, so jobs cannot probe
the store."""

import uuid

import pytest
from botocore.exceptions import ClientError

from pipeq.core.contract import Job, ObjectInput, make_input
from pipeq.core.messaging import TASK_NAME
from pipeq.core.records import JobRecord
from pipeq.producer import InvalidJob
from pipeq.worker.errors import MediaNotFound
from pipeq.worker.media import MediaFetcher
from tests.support.settings import BUCKET, model_name

TEXT, VISION = "text-classification", "image-text-to-text"
SECRET_BUCKET = "hr-private"


@pytest.fixture(scope="module")
def secret(s3) -> str:
    """An object the worker's credentials can read, in a bucket outside the allowed prefixes."""
    if SECRET_BUCKET not in [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=SECRET_BUCKET)
    s3.put_object(Bucket=SECRET_BUCKET, Key="salaries.txt", Body=b"Alice 250000\nBob 90000\n")
    return f"s3://{SECRET_BUCKET}/salaries.txt"


def as_plain(uri: str) -> tuple[str, str]:
    """The object is the job's input (a text task reads it as UTF-8 text): its task and input."""
    return TEXT, uri


def as_reference_in_a_dict(uri: str) -> tuple[str, dict]:
    """The object is a media reference inside a dict input, fetched in place: its task and input."""
    return VISION, {"images": [{"kind": "s3", "uri": uri}], "text": "<image> Read out the text in the picture."}


SHAPES = [as_plain, as_reference_in_a_dict]


@pytest.mark.parametrize("shape", SHAPES)
def test_an_object_outside_the_allowed_prefixes_is_refused_at_submission_naming_the_setting(client, secret, shape):
    task, input = shape(secret)
    with pytest.raises(InvalidJob) as refused:
        client.submit(task, input, model=model_name(task))
    message = str(refused.value)
    assert secret in message
    assert "allowed_object_prefixes" in message
    assert f"s3://{BUCKET}/" in message  # where objects may be


@pytest.mark.parametrize(
    "key",
    ["calls/../../hr-private/salaries.txt", "./salaries.txt", "calls//salaries.txt", "calls\\..\\salaries.txt"],
)
def test_keys_that_could_be_read_as_other_keys_are_refused_at_submission(client, key):
    with pytest.raises(InvalidJob, match="Refer to objects by their plain key"):
        client.submit(TEXT, f"s3://{BUCKET}/{key}", model=model_name(TEXT))


def run_unchecked(client, task: str, input: object) -> JobRecord:
    """Publish a job straight to the broker, as anyone who can write to it may (no producer checks); its record."""
    job = Job(task=task, model=model_name(task), input=make_input(input))
    client.store.create(
        [JobRecord(state="queued", id=job.id, task=job.task, model=job.model, submitted_at=job.submitted_at)]
    )
    client.celery.send_task(TASK_NAME, args=[job.model_dump(mode="json")], task_id=job.id, queue="pipeq")
    return client.wait(job.id, timeout=60)


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("shape", SHAPES)
def test_in_the_worker_an_object_outside_the_prefixes_fails_exactly_as_a_missing_one(client, s3, secret, shape):
    s3.put_object(Bucket=BUCKET, Key="in/../salaries.txt", Body=b"stored under a literal '..' key")
    cases = {
        "outside the prefixes": secret,
        "'..' in its key": f"s3://{BUCKET}/in/../salaries.txt",
        "missing key": f"s3://{BUCKET}/missing-{uuid.uuid4().hex}.txt",
        "missing bucket": f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/salaries.txt",
    }
    errors = {}
    for case, uri in cases.items():
        record = run_unchecked(client, *shape(uri))
        assert record.state == "failed", (case, record.result)
        assert "250000" not in record.model_dump_json()
        errors[case] = (record.error.type, record.error.message.replace(uri, "<uri>"))
    assert len(set(errors.values())) == 1, errors
    assert errors["missing key"] == (
        "MediaNotFound",
        "object <uri> does not exist or is not readable by this worker: check the bucket and the key, and that the"
        " object lies under the allowed_object_prefixes",
    )


class RefusingStore:
    """An S3 client whose every read fails with one error code (what a store says of a forbidden object)."""

    def __init__(self, code: str, status: int) -> None:
        self.code, self.status = code, status

    def get_object(self, **_: object) -> None:
        raise ClientError(
            {"Error": {"Code": self.code}, "ResponseMetadata": {"HTTPStatusCode": self.status}}, "GetObject"
        )


@pytest.mark.parametrize(
    ("code", "status"),
    [("NoSuchKey", 404), ("NoSuchBucket", 404), ("AccessDenied", 403), ("403", 403), ("404", 404)],
)
def test_missing_and_forbidden_objects_give_one_message(code, status):
    uri = f"s3://{BUCKET}/report.txt"
    fetcher = MediaFetcher(RefusingStore(code, status), max_bytes=1_000)
    try:
        [failure] = fetcher.fetch_many([ObjectInput(uri=uri)])
    finally:
        fetcher.close()
    assert isinstance(failure, MediaNotFound)
    assert str(failure) == (
        f"object {uri} does not exist or is not readable by this worker: check the bucket and the key, and that the"
        " object lies under the allowed_object_prefixes"
    )
