"""The delivery-guarantee scenarios every broker must pass, written once: the Redis tests (tests/worker/test_crash.py,
test_dead_worker.py, test_priorities.py, test_operations.py) and their RabbitMQ twins
(tests/worker/test_rabbitmq_guarantees.py) call them with the broker's own probes: what waits in a queue, what a
worker holds."""

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

from pipeq.config.settings import Settings, drain_timeout
from pipeq.producer import Client
from pipeq.worker.app import create_app
from tests.support.hang_hook import SLOW_MARKER, start_hooked
from tests.support.waiting import wait_until
from tests.support.workers import kill, start_worker_process, worker_thread

TEXT = "text-classification"


def node(worker: Popen) -> str:
    """The start of the node name a worker process writes into the records it claims."""
    return f"pipeq-cpu-{worker.pid}@"


def submit_by_priority(client: Client, priorities: list[str], total: int = 300) -> list[str]:
    """``total`` jobs split evenly between ``priorities``, submitted in that order; their ids."""
    ids = []
    for priority in priorities:
        inputs = [f"{priority} review number {i} was fine" for i in range(total // len(priorities))]
        ids += client.submit_many(TEXT, inputs, priority=priority)
    return ids


def caught_mid_batch(client: Client, ids: list[str]) -> Callable[[], bool]:
    """A probe: whether some of ``ids`` have succeeded while others run (a worker is in the middle of them)."""
    return lambda: {"succeeded", "running"} <= {record.state for record in client.store.get_many(ids)}


def running_on(client: Client, ids: list[str], worker: Popen) -> list[str]:
    """The ids among ``ids`` whose records say ``worker`` runs them now."""
    name = node(worker)
    return [r.id for r in client.store.get_many(ids) if r.state == "running" and r.worker.startswith(name)]


def burst_caught_running(client: Client, worker: Popen, prefix: str, count: int) -> list[str]:
    """Submit ``count`` jobs and wait until ``worker`` runs some of them; their ids."""
    ids = client.submit_many(TEXT, [f"{prefix} review {i}" for i in range(count)])
    wait_until(lambda: running_on(client, ids, worker), 120, message="the worker never ran a job of the burst")
    return ids


def paused(worker: Popen, seconds: float) -> None:
    """SIGSTOP the worker for ``seconds`` (a long GC, a slow network, a debugger), then SIGCONT."""
    worker.send_signal(signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        worker.send_signal(signal.SIGCONT)


def check_a_short_pause_keeps_the_jobs(client: Client, workers: list[Popen], count: int, pause_s: float) -> None:
    """The first of ``workers``, paused for ``pause_s`` (under dead_after_s) mid-burst, keeps its jobs: each runs
    once."""
    ids = burst_caught_running(client, workers[0], "short pause", count)
    paused(workers[0], pause_s)
    records = client.wait_many(ids, timeout=120)
    assert {record.state for record in records.values()} == {"succeeded"}
    assert {record.attempts for record in records.values()} == {1}  # nothing went to another worker


def check_a_long_pause_loses_the_jobs(client: Client, workers: list[Popen], count: int, dead_after_s: float) -> None:
    """The first of ``workers``, stopped mid-burst until the others finish everything, loses what it ran to them;
    resumed, it finishes its calls, and their late results are refused (one result each)."""
    ids = burst_caught_running(client, workers[0], "long pause", count)
    name = node(workers[0])
    running = running_on(client, ids, workers[0])
    workers[0].send_signal(signal.SIGSTOP)
    try:
        records = client.wait_many(ids, timeout=120)  # the others finish everything while it is stopped
    finally:
        workers[0].send_signal(signal.SIGCONT)
    assert {record.state for record in records.values()} == {"succeeded"}
    taken_over = [records[job_id] for job_id in running]
    assert taken_over and all(r.attempts == 2 and not r.worker.startswith(name) for r in taken_over)
    time.sleep(dead_after_s)  # the resumed worker finishes what it was running: its results are refused
    after = client.store.get_many(ids)
    assert [r.model_dump() for r in after] == [records[job_id].model_dump() for job_id in ids]


def check_a_high_job_overtakes_a_backlog(settings: Settings, client: Client, backlog: int, most_batches: int) -> None:
    """A high job submitted while a worker (in this process) works through ``backlog`` normal jobs starts within
    ``most_batches`` micro-batches of its submission, ahead of most of the backlog."""
    normal = client.submit_many(TEXT, [f"normal review {i}: it was fine" for i in range(backlog)])
    with worker_thread(create_app(settings), queues=[settings.models[0].queue]):
        wait_until(
            lambda: {record.state for record in client.store.get_many(normal[:50])} == {"succeeded"},
            120,
            message="the worker never got going on the backlog",
        )
        urgent = client.wait(client.submit(TEXT, "urgent: it was fine", priority="high"), timeout=60)
        normals = list(client.wait_many(normal, timeout=120).values())
    assert (urgent.state, urgent.priority) == ("succeeded", "high")
    # Jobs claimed together share their started_at: one value per micro-batch.
    batches = {r.started_at for r in [*normals, urgent] if urgent.submitted_at < r.started_at <= urgent.started_at}
    assert len(batches) <= most_batches, f"{len(batches)} micro-batches started before the high job's own"
    overtaken = [record for record in normals if record.started_at > urgent.started_at]
    assert len(overtaken) > backlog // 2, "the backlog was mostly done before the high job came: nothing to overtake"


def check_sigterm_drains(
    settings: Settings,
    config: Path,
    client: Client,
    tmp_path: Path,
    waiting: Callable[[], int],
    worker_ready: Callable[[], bool],
    held: Callable[[], int] = lambda: 0,
) -> None:
    """SIGTERM a worker running a slow job with a burst behind it: it finishes the batch in hand, gives back the rest
    with their attempts (``waiting()`` counts the jobs in its queue, ``held()`` those a gone worker still holds), and
    exits 0 within the drain timeout; a second worker then runs the rest, once each."""
    queue, model = settings.models[0].queue, settings.models[0].name
    bound = drain_timeout(settings, [queue])
    log = tmp_path / "worker.log"
    worker = start_hooked(["--device", "cpu", "--queues", queue], config, log, tmp_path / "hook")
    try:
        wait_until(worker_ready, 120, message=f"the worker never got ready; its log: {log}")
        assert client.wait(client.submit(TEXT, "warm-up", model=model), 120).state == "succeeded"  # model loaded
        [slow] = client.submit_many(TEXT, [f"a {SLOW_MARKER} review"], model=model)
        wait_until(lambda: client.store.get(slow).state == "running", 60, message="the slow job never started")
        time.sleep(0.5)  # from its claim into its pipeline call: milliseconds, the call itself takes seconds
        burst = client.submit_many(TEXT, [f"review {i} of the burst" for i in range(200)], model=model)
        wait_until(lambda: waiting() < 200, 30, message="the worker took none of the burst")
        assert client.store.get(slow).state == "running", "the slow job ended before the drain could start"
        worker.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = worker.wait(bound + 30)
        took = time.monotonic() - began
    finally:
        if worker.poll() is None:
            kill(worker)
    assert code == 0, log.read_text()[-3000:]
    assert took <= bound, f"the drain took {took:.1f} s, past its bound of {bound:g} s"

    slow_record = client.store.get(slow)
    assert (slow_record.state, slow_record.attempts) == ("succeeded", 1)  # the batch in hand was finished
    states = Counter(record.state for record in client.store.get_many(burst))
    assert states["running"] == 0 and states["queued"] > 0, states
    assert held() == 0  # nothing held by a worker that is gone
    assert waiting() == states["queued"]  # every job it did not finish is back in the queue
    given_back = [record for record in client.store.get_many(burst) if record.state == "queued"]
    assert {record.attempts for record in given_back} <= {0}  # with the attempt it did not use

    second = start_worker_process(config, queue, tmp_path / "second.log")
    try:
        records = client.wait_many(burst, timeout=180)
    finally:
        kill(second)
    assert {record.state for record in records.values()} == {"succeeded"}
    assert {record.attempts for record in records.values()} == {1}  # nothing ran twice
