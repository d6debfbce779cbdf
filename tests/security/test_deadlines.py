"""A job never holds a worker past its deadline (issue 10).

Every pipeline call has its model's run time limit. Generation stops by it on its own; a call that returns past it
fails its job with JobTimeout (a shared call is split first, so only the slow job fails). A call that never returns
is no longer kept alive, and the watchdog settles what the worker holds (the call's job failed, every other job
requeued for other workers) and ends the process; its supervisor restarts it.
"""

import os
import sys
import threading
import time
from functools import partial

import pytest
import transformers

from devtools.config_files import write_config
from pipeq.config.catalogue import ModelEntry
from pipeq.config.tasks import task_spec
from pipeq.core.contract import Job, make_input
from pipeq.core.records import RecordStore
from pipeq.producer import Client
from pipeq.worker import supervisor
from pipeq.worker.deadlines import CallDeadlines, CallWatch, RunningCall, limit_generation
from pipeq.worker.decoding import Decoded
from pipeq.worker.engine import Engine
from pipeq.worker.errors import JobTimeout
from pipeq.worker.runner import run_group
from pipeq.worker.supervisor import supervise
from pipeq.worker.watchdog import OVERDUE_EXIT_CODE
from tests.support.broker import wait_for_no_messages
from tests.support.engines import Labeller, Messages, OnePipeline, engine_on, run_through
from tests.support.hang_hook import MARKER, start_hanging_workers
from tests.support.settings import make_settings, model_name
from tests.support.waiting import wait_until

TEXT = "text-classification"
GENERATION = "text-generation"


def items(*texts: str) -> list[Decoded]:
    return [Decoded(text, float(len(text))) for text in texts]


# -- calls that return past their limit ---------------------------------------------------------------------------


def test_a_shared_call_past_its_limit_is_split_and_only_the_slow_job_fails():
    def slow(texts):
        if "slow" in texts:
            time.sleep(0.5)

    pipe = Labeller(slow)
    deadlines = CallDeadlines(CallWatch(), 0.2, ["job-slow", "job-fast", "job-fine"])
    results = run_group(pipe, task_spec(TEXT), {}, 8, items("slow", "fast", "fine"), deadlines)
    assert isinstance(results[0], JobTimeout)
    assert "run time limit of 0.2 s (run_time_limit_s in the catalogue)" in str(results[0])
    assert results[1:] == [[{"label": "LEN4", "score": 1.0}]] * 2
    assert pipe.calls[0] == ["slow", "fast", "fine"]  # together first, then halves until the slow one is alone


def test_generation_stops_by_the_deadline_and_fails_its_job(tiny_models):
    pipe = transformers.pipeline(GENERATION, model=str(tiny_models[GENERATION]), device="cpu")
    generated: list[tuple[float | None, int]] = []
    generate = pipe.model.generate

    def spy(*args, **kwargs):
        sequences = generate(*args, **kwargs)
        generated.append((kwargs.get("max_time"), sequences.shape[-1] - kwargs["input_ids"].shape[-1]))
        return sequences

    pipe.model.generate = spy
    watch = CallWatch()
    limit_generation(pipe, watch)
    parameters = {"max_new_tokens": 256, "min_new_tokens": 256, "do_sample": False}
    started = time.monotonic()
    [result] = run_group(
        pipe, task_spec(GENERATION), parameters, 1, items("Once upon a time"), CallDeadlines(watch, 0.05, ["job"])
    )
    assert isinstance(result, JobTimeout), result
    [(max_time, new_tokens)] = generated
    assert max_time is not None and max_time <= 0.05
    assert new_tokens < 256, "generation ran to its length instead of stopping by the deadline"
    assert time.monotonic() - started < 30
    pipe("Once upon a time", max_new_tokens=2)
    assert generated[-1][0] is None  # outside a watched call, generate() is left as it is


# -- calls that never return: keep-alive and watchdog ----------------------------------------------------------


def test_the_keepalive_stops_touching_the_jobs_of_an_overdue_call(settings):
    touched: list[int] = []
    engine = Engine(settings, store=None, fetcher=None, pipelines=None)
    messages = Messages()
    jobs = [Job(task=TEXT, model=model_name(TEXT), input=make_input(f"job {tag}")) for tag in (1, 2, 3)]
    held = [messages.delivery(job, touch=touched.extend, tag=tag) for tag, job in zip((1, 2, 3), jobs, strict=True)]
    for delivery in held:
        engine.submit(delivery)
    engine.watch.current = RunningCall(time.monotonic() - 10, 5.0, [held[1]])  # 5 s past its limit
    engine.touch_held()
    assert sorted(touched) == [1, 3]
    touched.clear()
    engine.watch.current = RunningCall(time.monotonic() - 1, 5.0, [held[1]])  # within its limit
    engine.touch_held()
    assert sorted(touched) == [1, 2, 3]


@pytest.fixture
def hanging_engines(redis_url, s3_endpoint, tiny_models, redis_db):
    """Engines whose pipeline blocks on texts holding the marker, with a run time limit of 0.3 s, whose watchdog
    records the exit instead of ending the test process. Yields ``start(**engine_on options) -> (engine, exits)``
    and the store."""
    settings = make_settings(redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db)
    entry = settings.models[0].model_copy(update={"run_time_limit_s": 0.3, "max_wait_s": 0.2})
    settings = settings.model_copy(update={"models": [ModelEntry(**entry.model_dump())]})
    store = RecordStore(settings.result_backend)
    release = threading.Event()
    engines: list[Engine] = []

    def block(texts: list[str]) -> None:
        if any(MARKER in text for text in texts):
            release.wait()

    def start(**options) -> tuple[Engine, list[int]]:
        exits: list[int] = []
        engines.append(engine_on(settings, store, OnePipeline(Labeller(block)), end_process=exits.append, **options))
        return engines[-1], exits

    yield start, store
    release.set()
    for engine in engines:
        engine.stop(5)


def test_the_watchdog_fails_a_call_that_never_returns_and_requeues_the_other_jobs(hanging_engines):
    start, store = hanging_engines
    engine, exits = start()
    messages = Messages()
    culprit = Job(task=TEXT, model=model_name(TEXT), input=make_input(f"a much longer text that says {MARKER}"))
    others = [Job(task=TEXT, model=model_name(TEXT), input=make_input(text)) for text in ("ok", "fine")]
    run_through(engine, messages, [culprit, *others], timeout=60)  # the culprit's call runs first: longest
    wait_until(lambda: exits, 30, message="the watchdog did not end the (stand-in) process")
    assert exits == [OVERDUE_EXIT_CODE]
    record = store.get(culprit.id)
    assert (record.state, record.error.type, record.attempts) == ("failed", "JobTimeout", 1)
    assert "run time limit of 0.3 s (run_time_limit_s in the catalogue)" in record.error.message
    assert "worker test@engine ended" in record.error.message
    assert messages.acked == [culprit.id]
    assert sorted(messages.requeued) == sorted(job.id for job in others)
    for other in store.get_many([job.id for job in others]):
        assert (other.state, other.attempts) == ("queued", 0)  # their attempt given back: they never ran


def test_jobs_of_a_shared_call_that_never_returned_run_alone_next_time_and_only_the_culprit_fails(hanging_engines):
    start, store = hanging_engines
    culprit = Job(task=TEXT, model=model_name(TEXT), input=make_input(f"say {MARKER}"))  # first of equal sizes
    innocents = [Job(task=TEXT, model=model_name(TEXT), input=make_input(f"say {word}")) for word in ("okay", "fine")]
    jobs = [culprit, *innocents]
    rounds = []
    for _ in range(3):  # each round a fresh worker, as after the supervisor's restart
        engine, exits = start(start=False)
        messages = Messages()
        pending = [job for job in jobs if not (store.get(job.id) and store.get(job.id).done)]
        run_through(engine, messages, pending, timeout=60, then=partial(engine.start, end_process=exits.append))
        if messages.requeued:  # the watchdog requeues, then ends the process
            wait_until(lambda: exits, 30, message="the watchdog did not end the (stand-in) process")  # noqa: B023
        rounds.append((exits, sorted(messages.requeued)))
        if not exits:
            break
    [first, second, third] = rounds
    assert first == ([OVERDUE_EXIT_CODE], sorted(job.id for job in jobs))  # one call held all three: all requeued
    assert second == ([OVERDUE_EXIT_CODE], sorted(job.id for job in innocents))  # alone, only the culprit hung
    assert third == ([], [])
    records = {record.id: record for record in store.get_many([job.id for job in jobs])}
    assert (records[culprit.id].error.type, records[culprit.id].attempts) == ("JobTimeout", 2)
    for job in innocents:
        assert (records[job.id].state, records[job.id].attempts) == ("succeeded", 2)


# -- the supervisor restarts a worker its watchdog ended --------------------------------------------------------


def _exits(*codes: int) -> tuple[list[str], dict[str, str]]:
    """A child that ends with the next of ``codes`` each time it starts (the last one from then on): an exit
    status, or a signal when negative. It counts its starts in the file named by its last argument."""
    script = (
        "import os, pathlib, sys\n"
        f"codes = {list(codes)!r}\n"
        "counter = pathlib.Path(sys.argv[1])\n"
        "starts = int(counter.read_text()) if counter.exists() else 0\n"
        "counter.write_text(str(starts + 1))\n"
        "code = codes[min(starts, len(codes) - 1)]\n"
        "os.kill(os.getpid(), -code) if code < 0 else sys.exit(code)\n"
    )
    return [sys.executable, "-c", script], dict(os.environ)


def test_the_supervisor_restarts_a_worker_its_watchdog_ended(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(supervisor, "FIRST_BACKOFF_S", 0.05)
    command, env = _exits(OVERDUE_EXIT_CODE, -9, 3)
    counter = tmp_path / "starts"
    assert supervise([([*command, str(counter)], env)], ["cpu"]) == 3
    assert counter.read_text() == "3"
    err = capsys.readouterr().err
    assert "its watchdog ended it, a pipeline call ran past its run time limit; restarting it in 0.05 s" in err
    assert "exited with 3; stopped the others" in err


def test_a_worker_in_a_crash_loop_stops_everything_saying_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(supervisor, "FIRST_BACKOFF_S", 0.01)
    command, env = _exits(OVERDUE_EXIT_CODE)
    assert supervise([([*command, str(tmp_path / "starts")], env)], ["cpu"]) == OVERDUE_EXIT_CODE
    assert (tmp_path / "starts").read_text() == str(supervisor.MAX_RESTARTS_PER_MINUTE + 1)
    assert "a crash loop, so everything stops" in capsys.readouterr().err


# -- the whole story: a real worker process under `pipeq worker --devices` -------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_model_that_never_returns_fails_its_job_by_the_deadline_and_the_next_jobs_succeed(
    redis_url, s3_endpoint, tiny_models, tmp_path, redis_db
):
    settings = make_settings(redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, db=redis_db)
    update = {"run_time_limit_s": 2.0, "queue": "deadlines", "max_wait_s": 0.5}
    entry = ModelEntry(**settings.models[0].model_copy(update=update).model_dump())
    settings = settings.model_copy(update={"models": [entry]})
    client = Client(settings)
    log = tmp_path / "worker.log"
    texts = [f"review number {i} was fine" for i in range(5)]
    texts.insert(2, f"review number 2 was {MARKER}")
    ids = client.submit_many(TEXT, texts, model=entry.name)
    workers = start_hanging_workers(
        write_config(settings, tmp_path / "pipeq.toml"), "deadlines", log, tmp_path / "hook"
    )
    try:
        try:
            records = client.wait_many(ids, timeout=600)
        except TimeoutError:
            raise AssertionError(f"jobs left undone; the worker's log ends: {log.read_text()[-4000:]}") from None
        culprit = records.pop(ids[2])
        assert (culprit.state, culprit.error.type) == ("failed", "JobTimeout"), culprit
        assert "run time limit of 2 s (run_time_limit_s in the catalogue)" in culprit.error.message
        assert culprit.attempts in (1, 2)  # 2 when it first shared its call with others
        assert {record.state for record in records.values()} == {"succeeded"}, log.read_text()[-4000:]
        output = log.read_text()
        assert f"exited with {OVERDUE_EXIT_CODE}: its watchdog ended it" in output and "restarting it in" in output
        later = client.submit_many(TEXT, ["and the next one", "and the one after"], model=entry.name)
        assert {record.state for record in client.wait_many(later, timeout=300).values()} == {"succeeded"}
        wait_for_no_messages(settings, "deadlines")
    finally:
        workers.terminate()
        workers.wait(180)
        client.close()
