"""A bad job fails once, and no message loops (issue 10).

Whatever goes wrong while preparing or running a job fails that job alone, once, saying why; only unreachable
infrastructure requeues, and ``max_attempts`` bounds that. A message that is not a valid job is acked even when its
failure cannot be recorded.
"""

import threading
import time
from types import SimpleNamespace

import kombu.exceptions
import pytest
import redis

from pipeq.config.tasks import task_spec
from pipeq.core.contract import Job, make_input
from pipeq.core.messaging import TASK_NAME
from pipeq.core.records import JobRecord, RecordStore, now
from pipeq.worker import engine as engine_module
from pipeq.worker import runner as runner_module
from pipeq.worker.consumer import batching_strategy
from pipeq.worker.decoding import Decoded
from pipeq.worker.engine import Delivery
from pipeq.worker.errors import PipelineError
from pipeq.worker.runner import run_group
from tests.security.raw_jobs import final_record, publish_raw
from tests.support.broker import wait_for_no_messages
from tests.support.engines import Labeller, Messages, OnePipeline, TextFetcher, engine_on, run_through
from tests.support.settings import make_settings, model_name
from tests.support.waiting import wait_until

TEXT = "text-classification"
MAX_ATTEMPTS = 3
"""The default of the max_attempts setting."""


def text_job(text: str, task: str = TEXT, **parameters) -> Job:
    return Job(task=task, model=model_name(task), input=make_input(text), parameters=parameters)


# -- through a worker --------------------------------------------------------------------------------------------


def test_a_wrong_type_parameter_published_raw_fails_its_job_once(worker, client, settings):
    job = text_job("a sentence to embed", task="feature-extraction", tokenize_kwargs="x")
    record = final_record(client, publish_raw(client, job))
    assert record.state == "failed", record
    assert record.attempts == 1, f"the job ran {record.attempts} times"
    wait_for_no_messages(settings)


def test_a_job_started_max_attempts_times_fails_with_its_count_and_never_runs(worker, client, settings, monkeypatch):
    job = text_job("this one keeps killing its workers")
    ran: list[str] = []
    real_run_group = engine_module.run_group

    def spying_run_group(pipe, spec, params, batch_size, items, *args, **kwargs):
        ran.extend(item.value for item in items)
        return real_run_group(pipe, spec, params, batch_size, items, *args, **kwargs)

    monkeypatch.setattr(engine_module, "run_group", spying_run_group)
    started = JobRecord(
        state="running",
        id=job.id,
        task=job.task,
        model=job.model,
        submitted_at=now(),
        started_at=now(),
        attempts=MAX_ATTEMPTS,
        worker="gone@host",
    )
    client.store.write([started])
    record = final_record(client, publish_raw(client, job))
    assert record.state == "failed" and record.error.type == "TooManyAttempts", record
    assert record.attempts == MAX_ATTEMPTS
    assert "started 3 times" in record.error.message and "max_attempts = 3" in record.error.message
    assert "gone@host" in record.error.message
    assert job.input.text not in ran
    assert settings.max_attempts == MAX_ATTEMPTS
    wait_for_no_messages(settings)


def test_a_raw_message_with_bad_headers_and_an_unreadable_body_is_acked_once(worker, client, settings):
    # No job id to record the failure under: acked all the same (it used to be requeued forever).
    with client.celery.connection_for_write() as connection:
        connection.default_channel.basic_publish(
            connection.default_channel.prepare_message(
                b"{this is not json",
                content_type="application/json",
                content_encoding="utf-8",
                headers={"task": TASK_NAME, "id": ["not", "an", "id"]},
            ),
            exchange="",
            routing_key="pipeq",
        )
    wait_for_no_messages(settings)


# -- the consumer: a broken message whose failure cannot be recorded ----------------------------------------------


class _Message:
    def __init__(self, headers) -> None:
        self.headers = headers
        self.delivery_tag = 1

    def decode(self):
        raise ValueError("not JSON")


class _UnreachableStore:
    def write(self, records):
        raise redis.ConnectionError("the record store is unreachable")


class _Consumer:
    connection_errors = ()

    def __init__(self) -> None:
        self.pipeq_engine = type("EngineStub", (), {"store": _UnreachableStore()})()


class _App:
    def __init__(self, settings) -> None:
        self.pipeq_settings = settings


@pytest.mark.parametrize(
    "headers",
    [{"task": TASK_NAME, "id": "job-1"}, {"task": TASK_NAME, "id": ["a", "list"]}, ["not", "a", "mapping"]],
    ids=["store-unreachable", "id-not-a-string", "headers-not-a-mapping"],
)
def test_a_broken_message_whose_failure_cannot_be_recorded_is_acked_not_requeued(settings, headers):
    on_message = batching_strategy(None, _App(settings), _Consumer())
    settled: list[str] = []
    on_message(
        _Message(headers),
        None,
        ack=lambda *_: settled.append("ack"),
        reject=lambda *args: settled.append(f"reject requeue={args[-1]}"),
    )
    assert settled == ["ack"]


# -- the engine: whatever goes wrong fails only the jobs it concerns -----------------------------------------------


@pytest.fixture
def engine_setup(redis_url, s3_endpoint, tiny_models, redis_db):
    """Settings and a record store of the test's own Redis databases, and ``start`` for engines on them (stopped
    after the test)."""
    settings = make_settings(redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db)
    store = RecordStore(settings.result_backend)
    engines = []

    def start(*args, **kwargs):
        engines.append(engine_on(settings, store, *args, **kwargs))
        return engines[-1]

    yield SimpleNamespace(settings=settings, store=store, start=start)
    for engine in engines:
        engine.stop(5)


def records_of(store: RecordStore, jobs: list[Job]) -> list[JobRecord]:
    return store.get_many([job.id for job in jobs])


def test_an_error_decoding_one_input_fails_that_job_alone(engine_setup, monkeypatch):
    store, start = engine_setup.store, engine_setup.start
    real_decode = engine_module.decode

    def decode(spec, raw, limits, rate):
        if raw == "explode":
            raise RuntimeError("the decoder broke")
        return real_decode(spec, raw, limits, rate)

    monkeypatch.setattr(engine_module, "decode", decode)
    messages, jobs = Messages(), [text_job(text) for text in ("fine", "explode", "good")]
    run_through(start(OnePipeline(Labeller())), messages, jobs)
    fine, exploded, good = records_of(store, jobs)
    assert (fine.state, good.state) == ("succeeded", "succeeded")
    assert (exploded.state, exploded.error.type, exploded.attempts) == ("failed", "InternalError", 1)
    assert "decoding the input raised RuntimeError: the decoder broke" in exploded.error.message
    assert sorted(messages.acked) == sorted(job.id for job in jobs) and messages.requeued == []


def test_an_unexpected_error_preparing_a_batch_fails_its_jobs_once(engine_setup):
    store, start = engine_setup.store, engine_setup.start

    class BrokenFetcher:
        def fetch_many(self, inputs, access=None):
            raise ValueError("no such thing")

    messages, jobs = Messages(), [text_job("one"), text_job("two")]
    run_through(start(OnePipeline(Labeller()), fetcher=BrokenFetcher()), messages, jobs)
    for record in records_of(store, jobs):
        assert (record.state, record.error.type, record.attempts) == ("failed", "InternalError", 1)
        assert "preparing the job raised ValueError: no such thing" in record.error.message
    assert messages.requeued == [] and sorted(messages.acked) == sorted(job.id for job in jobs)


def test_a_model_that_fails_to_load_unexpectedly_fails_its_jobs(engine_setup):
    store, start = engine_setup.store, engine_setup.start
    messages, jobs = Messages(), [text_job("one")]
    run_through(start(OnePipeline(error=RuntimeError("CUDA error: device-side assert"))), messages, jobs)
    [record] = records_of(store, jobs)
    assert (record.state, record.error.type) == ("failed", "ModelUnavailable")
    assert "RuntimeError: CUDA error" in record.error.message
    assert messages.requeued == []


def test_a_result_that_cannot_be_stored_fails_its_job_alone(engine_setup):
    store, start = engine_setup.store, engine_setup.start

    class PickyResults:
        def offload(self, record):
            if record.result[0]["label"] == "LEN7":
                raise TypeError("cannot store this")
            return record

    messages, jobs = Messages(), [text_job("seven!!"), text_job("fine")]
    run_through(start(OnePipeline(Labeller()), results=PickyResults()), messages, jobs)
    seven, fine = records_of(store, jobs)
    assert (seven.state, seven.error.type) == ("failed", "InternalError")
    assert "storing the result raised TypeError" in seven.error.message
    assert fine.state == "succeeded"
    assert messages.requeued == []


def test_unreachable_storage_requeues_with_the_attempt_given_back_until_it_answers(engine_setup):
    """An outage fails no job however long it lasts (the soak saw a 3 s one fail jobs that used up their attempts
    on quick retries); the job runs once storage answers again."""
    store, start = engine_setup.store, engine_setup.start

    class UnreachableFetcher(TextFetcher):
        down = True

        def fetch_many(self, inputs, access=None):
            if self.down:
                raise redis.ConnectionError("object storage is unreachable")
            return super().fetch_many(inputs, access)

    job = text_job("patience")
    fetcher = UnreachableFetcher()
    engine = start(OnePipeline(Labeller()), fetcher=fetcher)
    messages = Messages()
    for delivery in range(1, MAX_ATTEMPTS + 3):  # the broker redelivers each requeued message
        run_through(engine, messages, [job])
        assert messages.requeued == [job.id] * delivery and messages.acked == []
        assert (store.get(job.id).state, store.get(job.id).attempts) == ("queued", 0)
    fetcher.down = False
    run_through(engine, messages, [job])
    record = store.get(job.id)
    assert (record.state, record.attempts, record.result) == ("succeeded", 1, [{"label": "LEN8", "score": 1.0}])
    assert messages.acked == [job.id]


def assert_an_outage_fails_no_job(settings, store: RecordStore, flaky, text: str) -> None:
    """Deliver a job to an engine on ``flaky`` (a record store failing until its ``down`` is cleared) more often
    than ``max_attempts``: each delivery is requeued with its attempt given back; once Redis answers, the job runs on
    one attempt."""
    engine = engine_on(settings, flaky, OnePipeline(Labeller()))
    try:
        messages, job = Messages(), text_job(text)
        for delivery in range(1, MAX_ATTEMPTS + 3):
            run_through(engine, messages, [job])
            assert messages.requeued == [job.id] * delivery and messages.acked == []
            assert (store.get(job.id).state, store.get(job.id).attempts) == ("queued", 0)
        flaky.down = False
        run_through(engine, messages, [job])
    finally:
        engine.stop(5)
    record = store.get(job.id)
    assert (record.state, record.attempts) == ("succeeded", 1)
    assert record.result == [{"label": f"LEN{len(text)}", "score": 1.0}]
    assert messages.acked == [job.id]


def test_results_redis_cannot_take_requeue_their_jobs_with_the_attempt_given_back(engine_setup):
    """A failover while a batch's final records are written (Redis gone, or no replica taking them): the jobs ran
    and did nothing wrong, so an outage fails none of them however often it strikes (the soak saw jobs fail with
    TooManyAttempts under failovers every few seconds); they run again once Redis takes their results."""
    settings, store = engine_setup.settings, engine_setup.store

    class FailingOver(RecordStore):
        down = True

        def write(self, records, only_if=None, wait=None):
            if self.down and any(record.done for record in records):
                raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
            return super().write(records, only_if, wait)

    assert_an_outage_fails_no_job(settings, store, FailingOver(settings.result_backend), "failed over")


def test_a_batch_whose_jobs_cannot_be_checked_before_it_runs_is_requeued_with_the_attempt_given_back(engine_setup):
    """Redis restarting in the moment before a micro-batch starts, when the engine reads its jobs' states (to leave
    out those canceled since their claim): the batch never ran, so its jobs get their attempt back (the soak saw a
    job fail with TooManyAttempts after such requeues kept theirs); it runs once Redis answers."""
    settings, store = engine_setup.settings, engine_setup.store

    class Restarting(RecordStore):
        down = True

        def states(self, job_ids):
            if self.down:
                raise redis.BusyLoadingError("Redis is loading the dataset in memory")
            return super().states(job_ids)

    assert_an_outage_fails_no_job(settings, store, Restarting(settings.result_backend), "restarted")


def test_a_completed_webhook_the_broker_cannot_take_is_queued_when_the_job_comes_back(engine_setup):
    """Redis restarting between a batch's final records and its webhook events, which kombu reports as its own
    OperationalError: the soak saw such jobs acked with their webhooks never queued. Their messages go back
    instead, and the redelivery, finding each job final, queues its webhook and acks it; the job runs once."""
    store, start = engine_setup.store, engine_setup.start
    job = text_job("tell me")
    store.write([JobRecord.of(job, "queued", webhook="https://hooks.example/done")])
    announced, refusals = [], [kombu.exceptions.OperationalError("Redis is loading the dataset in memory")]

    def announce(events):
        if events and refusals:
            raise refusals.pop()
        announced.extend((job_id, event) for job_id, event, _ in events)

    engine = start(OnePipeline(Labeller()))
    engine.announce = announce
    messages = Messages()
    run_through(engine, messages, [job])
    assert (messages.acked, messages.requeued, announced) == ([], [job.id], [])
    assert store.get(job.id).state == "succeeded"
    run_through(engine, messages, [job])  # the broker delivers the requeued message again
    assert (messages.acked, announced) == ([job.id], [(job.id, "completed")])
    record = store.get(job.id)
    assert (record.state, record.attempts) == ("succeeded", 1)


def test_a_job_delivered_again_to_the_worker_running_it_runs_once_on_one_attempt(engine_setup):
    """The broker restores a worker's unacked messages when its connection is lost, and may deliver one back to
    the same worker while it still runs the job: claimed twice, the job spent two attempts (the soak saw jobs fail
    with TooManyAttempts under failovers so). The held delivery adopts the new message: one claim, one run, and
    the message acked is the one the broker holds now."""
    store, start = engine_setup.store, engine_setup.start
    running, finish = threading.Event(), threading.Event()

    def hold(texts):
        running.set()
        finish.wait(30)

    engine = start(OnePipeline(Labeller(hold)))
    job, settled = text_job("delivered twice"), []

    def delivery(name):
        return Delivery(job, lambda: settled.append(f"{name} acked"), lambda: settled.append(f"{name} requeued"))

    engine.submit(delivery("first"))
    assert running.wait(30), "the job never started"
    engine.submit(delivery("second"))  # the restored message, delivered again while the job runs
    finish.set()
    wait_until(lambda: settled, 30, message="the job's message was never settled")
    time.sleep(0.3)  # room for a second claim or settlement, were there one
    record = store.get(job.id)
    assert settled == ["second acked"]
    assert (record.state, record.attempts) == ("succeeded", 1)


# -- the runner: an error outside the pipeline call fails only the jobs it concerns --------------------------------


def test_a_parameter_that_breaks_token_counting_fails_only_the_jobs_the_pipeline_refuses():
    def refuse(texts):
        if "explode" in texts:
            raise ValueError("cannot take 'explode'")

    pipe = Labeller(refuse)
    pipe.tokenizer = object()  # token counting reads tokenize_kwargs as a mapping, and raises on "x"
    texts = ["one", "explode", "three"]
    items = [Decoded(text, float(len(text))) for text in texts]
    results = run_group(pipe, task_spec(TEXT), {"tokenize_kwargs": "x"}, 8, items)
    assert isinstance(results[1], PipelineError) and "cannot take 'explode'" in str(results[1])
    assert results[0] == [{"label": "LEN3", "score": 1.0}] and results[2] == [{"label": "LEN5", "score": 1.0}]


def test_an_error_shaping_one_output_fails_that_job_alone(monkeypatch):
    real_as_result = runner_module.as_result

    def as_result(spec, output):
        if output == [{"label": "LEN7", "score": 1.0}]:
            raise KeyError("score")
        return real_as_result(spec, output)

    monkeypatch.setattr(runner_module, "as_result", as_result)
    texts = ["seven!!", "eight!!!"]
    results = run_group(Labeller(), task_spec(TEXT), {}, 8, [Decoded(text, float(len(text))) for text in texts])
    assert isinstance(results[0], PipelineError) and "KeyError" in str(results[0])
    assert results[1] == [{"label": "LEN8", "score": 1.0}]


def test_with_submit_replicas_a_result_no_replica_holds_is_not_acked(engine_setup):
    """A worker acks only once a replica holds the final record (submit_replicas): with none answering, the job is
    requeued, its result kept on the primary; the redelivery finds it final and acks it without running it."""
    settings, store = engine_setup.settings, engine_setup.store
    lonely = settings.model_copy(update={"submit_replicas": 1, "submit_replicas_timeout_s": 0.1})
    engine = engine_on(lonely, store, OnePipeline(Labeller()))
    try:
        messages, job = Messages(), text_job("replicate me")
        run_through(engine, messages, [job])
        assert messages.requeued == [job.id] and messages.acked == []
        assert store.get(job.id).state == "succeeded"
        run_through(engine, messages, [job])
        assert messages.acked == [job.id] and store.get(job.id).attempts == 1  # not run again
    finally:
        engine.stop(5)
