"""Cancel through a real worker: one job of a micro-batch of 50 canceled at each stage (queued in Redis, waiting in
the worker's micro-batcher, prepared, running) never runs or has its result discarded, and the other 49 succeed."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis

from pipeq.config.settings import Settings
from pipeq.core.records import JobRecord
from pipeq.producer import Client, UnknownJob
from pipeq.worker.app import create_app
from tests.support.settings import model_name
from tests.support.waiting import wait_until
from tests.support.workers import worker_thread

TEXT = "text-classification"
MODEL = model_name(TEXT)
BATCH = 50


class Gate:
    """Holds every pipeline call on a text containing its marker until :meth:`open`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.held = threading.Event()
        self.opened = threading.Event()

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gates(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Gate]]:
    """Gates by marker: BLOCK (the call that keeps the model busy) and HOLD (a running call of a batch)."""
    from transformers.pipelines import base

    gates = {marker: Gate(marker) for marker in ("BLOCK", "HOLD")}
    original = base.Pipeline.__call__

    def held(self: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        texts = inputs if isinstance(inputs, list) else [inputs]
        for gate in gates.values():
            if any(isinstance(text, str) and gate.marker in text for text in texts):
                gate.held.set()
                gate.opened.wait(60)
        return original(self, inputs, *args, **kwargs)

    monkeypatch.setattr(base.Pipeline, "__call__", held)
    yield gates
    for gate in gates.values():
        gate.open()


@pytest.fixture
def own_settings(settings: Settings, redis_url: str, redis_db: int, s3) -> Settings:
    """The session's settings on a Redis pair of this test's own, micro-batches of up to 50 text jobs."""
    models = [
        entry.model_copy(update={"max_batch_jobs": BATCH, "max_wait_s": 5.0}) if entry.name == MODEL else entry
        for entry in settings.models
    ]
    return settings.model_copy(
        update={
            "broker_url": f"{redis_url}/{redis_db}",
            "result_backend": f"{redis_url}/{redis_db + 1}",
            "models": models,
        }
    )


@contextmanager
def own_worker(settings: Settings) -> Iterator[Any]:
    with worker_thread(create_app(settings), hostname="cancel@tests", without_heartbeat=True) as worker:
        yield worker


def texts(tag: str) -> list[str]:
    return [f"{tag} text number {i}, some words to classify" for i in range(BATCH)]


def queue_length(settings: Settings) -> int:
    with redis.Redis.from_url(settings.broker_url) as broker:
        return broker.llen("pipeq")


def check_one_canceled(records: dict[str, JobRecord], canceled: str, ran: bool) -> None:
    """The canceled job is canceled (having started or not, as said), and every other job succeeded."""
    record = records[canceled]
    assert record.state == "canceled", record
    assert record.error.type == "Canceled" and record.result is None
    if not ran:
        assert record.attempts == 0 and record.started_at is None, record
    others = [r for job_id, r in records.items() if job_id != canceled]
    assert len(others) == BATCH - 1
    assert all(r.state == "succeeded" and r.result for r in others), [r.error for r in others if r.error]


@pytest.mark.own_worker
def test_a_job_canceled_while_queued_in_redis_never_runs(own_settings: Settings):
    client = Client(own_settings)
    try:
        ids = client.submit_many(TEXT, texts("queued"), model=MODEL)
        assert client.cancel(ids[7]).state == "canceled"
        with own_worker(own_settings):
            records = client.wait_many(ids, timeout=120)
        check_one_canceled(records, ids[7], ran=False)
        assert client.status(ids[7]).state == "canceled"  # final: never overwritten
    finally:
        client.close()


@pytest.mark.own_worker
def test_jobs_canceled_in_the_micro_batcher_in_a_prepared_batch_and_while_running(own_settings, gates):
    """While the model is held on a call: batch A (one group) is claimed and prepared, batch B (another group) waits
    in the micro-batcher, both prefetched from Redis; one job of each is canceled. Then batch C runs, held in its
    first pipeline call, and one job of that call is canceled. None of the three is run or kept, and the other jobs
    of every batch succeed."""
    client = Client(own_settings)
    try:
        with own_worker(own_settings) as worker:
            engine = worker.consumer.pipeq_engine
            blocker = client.submit(TEXT, "BLOCK the model", model=MODEL, parameters={"top_k": 1})
            wait_until(gates["BLOCK"].held.is_set, timeout=60, message="the blocking call never started")
            prepared = client.submit_many(TEXT, texts("prepared"), model=MODEL)
            waiting = client.submit_many(TEXT, texts("waiting"), model=MODEL, parameters={"top_k": 2})
            wait_until(lambda: all(r.state == "running" for r in client.store.get_many(prepared)), timeout=30)
            wait_until(
                lambda: queue_length(own_settings) == 0 and len(engine.batcher) == BATCH,
                timeout=30,
                message=lambda: f"queue {queue_length(own_settings)}, batcher {len(engine.batcher)}",
            )
            assert client.status(waiting[0]).state == "queued"  # held by the worker, not claimed
            assert [client.cancel(prepared[3]).state, client.cancel(waiting[3]).state] == ["canceled"] * 2

            running = client.submit_many(TEXT, [f"HOLD {text}" for text in texts("running")], model=MODEL)
            gates["BLOCK"].open()
            wait_until(gates["HOLD"].held.is_set, timeout=60, message="the held call never started")
            in_call = engine.watch.current.jobs[1].job.id  # a job of the held call, not alone in it
            assert client.cancel(in_call).state == "canceled"
            gates["HOLD"].open()
            records = client.wait_many([blocker, *running, *prepared, *waiting], timeout=120)
        check_one_canceled({job_id: records[job_id] for job_id in running}, in_call, ran=True)
        check_one_canceled({job_id: records[job_id] for job_id in prepared}, prepared[3], ran=True)
        check_one_canceled({job_id: records[job_id] for job_id in waiting}, waiting[3], ran=False)
        assert records[prepared[3]].attempts == 1  # claimed, then dropped before its batch started
        assert records[blocker].state == "succeeded"
    finally:
        client.close()


def test_canceling_a_final_job_changes_nothing(worker, client):
    [job_id] = client.submit_many(TEXT, ["finished before it is canceled"], model=MODEL)
    done = client.wait(job_id, timeout=60)
    assert done.state == "succeeded"
    again = client.cancel(job_id)
    assert again.state == "succeeded" and again.result == done.result
    assert client.status(job_id) == done


def test_canceling_an_unknown_job_raises_unknown_job_and_cancels_nothing(worker, client):
    [known] = client.submit_many(TEXT, ["a real job"], model=MODEL)
    with pytest.raises(UnknownJob, match="no-such-job"):
        client.cancel_many([known, "no-such-job"])
    assert client.wait(known, timeout=60).state == "succeeded"
    with pytest.raises(UnknownJob):
        client.cancel("never-submitted")


@pytest.mark.own_worker
def test_a_job_whose_deadline_passes_while_the_worker_holds_it_expires_unrun(own_settings, gates):
    """The worker prefetched the job while its model was busy; when it comes to claim it, the deadline has passed:
    expired, never run, with no client reading it meanwhile."""
    client = Client(own_settings)
    try:
        with own_worker(own_settings):
            blocker = client.submit(TEXT, "BLOCK the model", model=MODEL, parameters={"top_k": 1})
            wait_until(gates["BLOCK"].held.is_set, timeout=60, message="the blocking call never started")
            late = client.submit(TEXT, "too late to run", model=MODEL, ttl=1)
            on_time = client.submit(TEXT, "in time to run", model=MODEL, ttl=600)
            wait_until(lambda: queue_length(own_settings) == 0, timeout=30)  # both held by the worker
            wait_until(lambda: client.store.get(late).past_deadline(), timeout=10)
            gates["BLOCK"].open()
            wait_until(lambda: client.store.get(late).done, timeout=60)  # the store: no client settles it
            record = client.store.get(late)
            assert client.wait(on_time, timeout=60).state == "succeeded"
            assert client.wait(blocker, timeout=60).state == "succeeded"
        assert record.state == "expired" and record.error.type == "Expired"
        assert record.attempts == 0 and record.started_at is None and record.result is None
    finally:
        client.close()
