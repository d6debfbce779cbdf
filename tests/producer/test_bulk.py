"""Streamed bulk submission (chunks, laziness, idempotency, errors per chunk), mixed requests, and bulk cancel."""

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from pipeq.config.catalogue import ModelEntry
from pipeq.core.job_index import ALL_KEY, model_key
from pipeq.core.messaging import broker_priority
from pipeq.core.records import JobRecord, now
from pipeq.producer import Client, InvalidJob, JobConflict
from pipeq.producer import client as client_module
from pipeq.producer.client import SUBMIT_CHUNK
from tests.support.settings import make_settings, model_name

TEXT = "text-classification"
MODEL = model_name(TEXT)
OTHER = "not-cached"
ELSEWHERE = "served-elsewhere"  # a text-classification model on the queue "other"


class Offline:
    """A client whose queues no worker consumes, and what its broker and records hold."""

    def __init__(self, redis_url: str, s3_endpoint: str, tiny_models: dict, db: int) -> None:
        settings = make_settings(redis_url, s3_endpoint, tiny_models, db=db)
        extra = ModelEntry(name=ELSEWHERE, id="pipeq-tests/not-in-any-cache", task=TEXT, queue="other")
        self.client = Client(settings.model_copy(update={"models": [*settings.models, extra]}))
        self.broker = redis.Redis.from_url(f"{redis_url}/{db}")

    def queued(self, queue: str = "pipeq") -> int:
        """Messages waiting in ``queue``, every priority."""
        with self.client.celery.producer_or_acquire() as producer:
            keys = [producer.channel._q_for_pri(queue, broker_priority(p)) for p in ("normal", "high", "low")]
        return sum(sum(item.startswith(b"{") for item in self.broker.lrange(key, 0, -1)) for key in keys)

    def records(self) -> int:
        return sum(1 for _ in self.client.store.redis.scan_iter("pipeq:job:*", count=1000))


@pytest.fixture
def offline(redis_url, s3_endpoint, tiny_models, redis_db):
    services = Offline(redis_url, s3_endpoint, tiny_models, redis_db)
    yield services
    services.client.close()
    services.broker.close()


class Counted:
    """A generator of inputs that counts how many were taken from it."""

    def __init__(self, count: int, prefix: str = "review") -> None:
        self.count, self.prefix, self.taken = count, prefix, 0

    def __iter__(self) -> Iterator[str]:
        for i in range(self.count):
            self.taken += 1
            yield f"{self.prefix} {i}"


def test_a_generator_is_read_one_chunk_at_a_time(offline):
    inputs = Counted(2 * SUBMIT_CHUNK + 500)
    seen: list[tuple[int, int, int]] = []
    ids = offline.client.submit_many(
        TEXT, iter(inputs), on_progress=lambda done: seen.append((done, inputs.taken, offline.queued()))
    )
    assert seen == [
        (SUBMIT_CHUNK, SUBMIT_CHUNK, SUBMIT_CHUNK),  # published before the next input was read
        (2 * SUBMIT_CHUNK, 2 * SUBMIT_CHUNK, 2 * SUBMIT_CHUNK),
        (2 * SUBMIT_CHUNK + 500, 2 * SUBMIT_CHUNK + 500, 2 * SUBMIT_CHUNK + 500),
    ]
    assert len(ids) == len(set(ids)) == 2 * SUBMIT_CHUNK + 500
    assert ids.existing == 0


def test_five_thousand_jobs_stream_through(offline):
    ids = offline.client.submit_many(TEXT, (f"review number {i}" for i in range(5000)), model=MODEL)
    assert len(set(ids)) == 5000
    assert (offline.queued(), offline.records()) == (5000, 5000)
    redis_records = offline.client.store.redis
    assert redis_records.zcard(ALL_KEY) == redis_records.zcard(model_key(MODEL)) == 5000
    assert [record.id for record in offline.client.list(limit=3).records] == ids[-1:-4:-1]


def test_resubmitting_with_the_same_ids_enqueues_nothing_again(offline):
    count = SUBMIT_CHUNK + 200
    first = offline.client.submit_many(TEXT, Counted(count), job_ids=(f"order-{i}" for i in range(count)))
    again = offline.client.submit_many(TEXT, Counted(count), job_ids=(f"order-{i}" for i in range(count)))
    assert first == again == [f"order-{i}" for i in range(count)]
    assert (first.existing, again.existing) == (0, count)
    assert (offline.queued(), offline.records()) == (count, count)


def test_a_conflict_enqueues_nothing_of_its_chunk_and_says_what_was_enqueued(offline):
    offline.client.submit(TEXT, "the original", job_id="taken")
    count, clash = 2 * SUBMIT_CHUNK + 300, SUBMIT_CHUNK + 456
    job_ids = [f"bulk-{i}" if i != clash else "taken" for i in range(count)]
    with pytest.raises(JobConflict) as conflict:
        offline.client.submit_many(TEXT, Counted(count), job_ids=iter(job_ids))
    error = conflict.value
    assert (error.index, error.enqueued) == (clash, job_ids[:SUBMIT_CHUNK])
    assert f"item {clash}: job id 'taken' already exists with another payload" in str(error)
    assert f"the {SUBMIT_CHUNK} job(s) before item {SUBMIT_CHUNK} were enqueued" in str(error)
    assert (offline.queued(), offline.records()) == (1 + SUBMIT_CHUNK, 1 + SUBMIT_CHUNK)
    assert offline.client.store.get(f"bulk-{SUBMIT_CHUNK}") is None
    assert offline.client.store.redis.zscore(ALL_KEY, f"bulk-{SUBMIT_CHUNK}") is None
    # Going on where it stopped: the same ids again, the clash replaced.
    job_ids[clash] = "not-taken"
    resumed = offline.client.submit_many(TEXT, Counted(count), job_ids=job_ids)
    assert (resumed.existing, offline.queued()) == (SUBMIT_CHUNK, 1 + count)


def test_an_invalid_input_enqueues_nothing_of_its_chunk(offline):
    def inputs() -> Iterator[object]:
        for i in range(3 * SUBMIT_CHUNK):
            yield 3.14 if i == 2 * SUBMIT_CHUNK + 7 else f"review {i}"

    with pytest.raises(InvalidJob) as refused:
        offline.client.submit_many(TEXT, inputs())
    error = refused.value
    assert (error.index, len(error.enqueued)) == (2 * SUBMIT_CHUNK + 7, 2 * SUBMIT_CHUNK)
    assert error.reason == "an input must be text, an s3:// reference, bytes or a dict, not float"
    assert offline.queued() == offline.records() == 2 * SUBMIT_CHUNK


def test_job_ids_and_inputs_must_pair_up(offline):
    with pytest.raises(InvalidJob, match="2 job ids for 3 inputs"):
        offline.client.submit_many(TEXT, ["a", "b", "c"], job_ids=["x", "y"])
    with pytest.raises(InvalidJob, match="job_ids ran out after 2 id"):
        offline.client.submit_many(TEXT, iter(["a", "b", "c"]), job_ids=iter(["x", "y"]))
    with pytest.raises(InvalidJob, match="more job_ids than inputs"):
        offline.client.submit_many(TEXT, iter(["a"]), job_ids=iter(["x", "y"]))
    with pytest.raises(InvalidJob, match="not one string"):
        offline.client.submit_many(TEXT, ["a"], job_ids="x")
    assert offline.queued() == offline.records() == 0


def test_a_publish_that_fails_leaves_no_record_behind(offline, monkeypatch):
    def broken(app, jobs, published, wait=None):
        published([jobs[0][0].id])  # the first was published, then the broker went away
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(client_module, "publish_jobs", broken)
    with pytest.raises(ConnectionError):
        offline.client.submit_many(TEXT, ["a", "b", "c"], job_ids=["p-1", "p-2", "p-3"])
    assert [offline.client.store.get(job_id) is not None for job_id in ("p-1", "p-2", "p-3")] == [True, False, False]
    assert offline.client.store.redis.zrange(ALL_KEY, 0, -1) == [b"p-1"]


def test_requests_of_mixed_tasks_models_and_priorities(offline):
    requests = [
        {"task": TEXT, "input": "plain"},
        {"task": TEXT, "input": "urgent", "priority": "high", "id": "urgent-1"},
        {"task": TEXT, "input": "whenever", "priority": "low", "model": OTHER, "result_ttl": 60},
        {"task": "zero-shot-classification", "input": "a match", "parameters": {"candidate_labels": ["sports"]}},
        {"task": TEXT, "input": "elsewhere", "model": ELSEWHERE, "ttl": 600, "priority": "high"},
        {"task": TEXT, "input": "told", "webhook": "https://example.com/hook", "webhook_events": ["started"]},
        {"task": TEXT, "input": "by then", "deadline": (now() + timedelta(hours=1)).isoformat()},
    ]
    ids = offline.client.submit_requests(iter(requests))
    assert ids[1] == "urgent-1" and len(set(ids)) == len(requests)
    records = {record.id: record for record in offline.client.store.get_many(list(ids))}
    priorities = [request.get("priority", "normal") for request in requests]
    assert [records[job_id].priority for job_id in ids] == priorities
    assert records[ids[2]].model == OTHER and records[ids[2]].result_ttl == 60
    assert records[ids[4]].deadline is not None and records[ids[6]].deadline > now()
    assert records[ids[5]].webhook_events == ("started",)
    with offline.client.celery.producer_or_acquire() as producer:
        channel = producer.channel
        high = offline.broker.lrange(channel._q_for_pri("pipeq", broker_priority("high")), 0, -1)
        low = offline.broker.lrange(channel._q_for_pri("pipeq", broker_priority("low")), 0, -1)
        elsewhere = offline.broker.lrange(channel._q_for_pri("other", broker_priority("high")), 0, -1)
    assert [json.loads(item)["headers"]["id"] for item in high] == ["urgent-1"]
    assert [json.loads(item)["headers"]["id"] for item in low] == [ids[2]]
    assert [json.loads(item)["headers"]["id"] for item in elsewhere] == [ids[4]]
    assert (offline.queued(), offline.queued("other")) == (6, 1)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"task": TEXT, "input": "hi", "modle": "x"}, "unknown request key(s) 'modle'; a request has task, input"),
        ({"task": TEXT, "input": "hi", 3: 4, "x" * 300: 1}, "unknown request key(s) '3', 'xxxxxxxx"),
        ({"input": "hi"}, "a request needs task"),
        ({}, "a request needs task and input"),
        (["task", "input"], "a request is a dict (a JSON object) with task and input, not list"),
        ("text-classification hi", "not str"),
        ({"task": ["x"], "input": "hi"}, "a request's task is a string, not list"),
        ({"task": TEXT, "input": "hi", "model": {"a": 1}}, "a request's model is a string, not dict"),
        ({"task": TEXT, "input": "hi", "id": 12}, "a request's id is a string, not int"),
        ({"task": TEXT, "input": "hi", "priority": "urgent"}, "priority 'urgent' is not one of low, normal, high"),
        ({"task": TEXT, "input": "hi", "parameters": "top_k=3"}, "parameters"),
        ({"task": TEXT, "input": "hi", "ttl": "soon"}, "ttl must be a number of seconds"),
        ({"task": TEXT, "input": "hi", "result_ttl": 10**12}, "result_ttl must be whole seconds"),
        ({"task": TEXT, "input": "hi", "webhook_events": ["started"]}, "give a webhook too"),
        ({"task": TEXT, "input": None}, "an input must be text"),
    ],
)
def test_bad_requests_are_refused_with_their_index(offline, request_, message):
    good = [{"task": TEXT, "input": f"fine {i}"} for i in range(3)]
    with pytest.raises(InvalidJob) as refused:
        offline.client.submit_requests([*good, request_, *good])
    assert message in str(refused.value)
    assert refused.value.index == 3
    assert "item 3: " in str(refused.value) and "nothing was enqueued" in str(refused.value)
    assert offline.queued() == offline.records() == 0


def write_record(offline: Offline, job_id: str, state: str, model: str = MODEL) -> None:
    """A record created, then moved to ``state`` as a worker would."""
    record = JobRecord(state="queued", id=job_id, task=TEXT, model=model, submitted_at=now())
    offline.client.store.create([record])
    if state != "queued":
        offline.client.store.write([record.model_copy(update={"state": state})])


def test_cancel_every_job_of_a_model(offline):
    mine = offline.client.submit_many(TEXT, ["one", "two", "three"], model=MODEL)
    others = offline.client.submit_many(TEXT, ["four", "five"], model=OTHER)
    write_record(offline, "running-1", "running")
    write_record(offline, "done-1", "succeeded")
    write_record(offline, "failed-1", "failed")
    assert offline.client.cancel_matching(model=MODEL) == 4
    states = {job_id: offline.client.status(job_id).state for job_id in [*mine, *others, "running-1", "done-1"]}
    assert [states[job_id] for job_id in [*mine, "running-1"]] == ["canceled"] * 4
    assert [states[job_id] for job_id in [*others, "done-1"]] == ["queued", "queued", "succeeded"]
    assert offline.client.cancel_matching(model=MODEL) == 0  # nothing left that is not final


def test_cancel_every_job_of_a_queue(offline):
    pipeq_jobs = [
        *offline.client.submit_many(TEXT, ["a", "b"], model=MODEL),
        offline.client.submit(TEXT, "c", model=OTHER),
    ]
    elsewhere = offline.client.submit_many(TEXT, ["d", "e"], model=ELSEWHERE)
    assert offline.client.cancel_matching(queue="other") == 2
    assert {offline.client.status(job_id).state for job_id in elsewhere} == {"canceled"}
    assert {offline.client.status(job_id).state for job_id in pipeq_jobs} == {"queued"}
    assert offline.client.cancel_matching(queue="pipeq") == 3


def test_cancel_walks_more_than_one_page(offline, monkeypatch):
    monkeypatch.setattr(client_module, "LIST_LIMIT", 4)
    ids = offline.client.submit_many(TEXT, [f"review {i}" for i in range(11)], model=MODEL)
    assert offline.client.cancel_matching(model=MODEL) == 11
    assert {record.state for record in offline.client.store.get_many(list(ids))} == {"canceled"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "give a model or a queue"),
        ({"model": MODEL, "queue": "pipeq"}, "give a model or a queue"),
        ({"model": "gpt-unknown"}, "model 'gpt-unknown' is not in the catalogue"),
        ({"queue": "nowhere"}, "no catalogue model is served on queue 'nowhere'; queues: other, pipeq"),
        ({"queue": ["pipeq"]}, "no catalogue model is served on queue"),
    ],
)
def test_bulk_cancel_needs_a_model_or_a_queue(offline, arguments, message):
    offline.client.submit(TEXT, "stays")
    with pytest.raises(InvalidJob) as refused:
        offline.client.cancel_matching(**arguments)
    assert message in str(refused.value)
    assert offline.queued() == 1


@pytest.mark.usefixtures("worker")
def test_streamed_jobs_of_every_priority_run(client):
    """Pipelined messages are the ones workers consume: every job of a streamed submission succeeds."""
    priorities = ["low", "normal", "high"]
    requests = (
        {"task": TEXT, "input": f"review {i}", "priority": priorities[i % 3], "model": MODEL} for i in range(12)
    )
    ids = client.submit_requests(requests)
    records = client.wait_many(ids, timeout=120)
    assert {record.state for record in records.values()} == {"succeeded"}
    assert [records[job_id].priority for job_id in ids] == priorities * 4
