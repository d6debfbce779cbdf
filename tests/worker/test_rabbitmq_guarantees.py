"""pipeq's delivery guarantees with RabbitMQ as the broker (job records in Redis), each the twin of a Redis test:
kill -9 mid-batch loses no job (test_crash), jobs held longer than dead_after_s run once (test_keepalive), a high
job overtakes a backlog (test_priorities), SIGTERM drains (test_operations), a killed or paused worker's jobs go to
the others within dead_after_s (test_dead_worker), a job that kills its worker every time fails after max_attempts
and a malformed message is acked (tests/security/test_fail_once)."""

import signal
import time
from collections import Counter

import pytest
from kombu import Connection

from devtools.config_files import write_config
from devtools.local_services import free_port
from pipeq.config.settings import Metrics
from pipeq.core.amqp import heartbeat_s
from pipeq.core.messaging import TASK_NAME
from pipeq.producer import Client
from pipeq.worker.app import create_app
from tests.support.guarantees import (
    burst_caught_running,
    caught_mid_batch,
    check_a_high_job_overtakes_a_backlog,
    check_a_long_pause_loses_the_jobs,
    check_a_short_pause_keeps_the_jobs,
    check_sigterm_drains,
    node,
    running_on,
    submit_by_priority,
)
from tests.support.hang_hook import MARKER, start_hooked, with_slow_jobs
from tests.support.rabbitmq import rabbitmq_settings, ready_messages
from tests.support.waiting import wait_until
from tests.support.workers import kill, start_worker_process, worker_thread
from tests.worker.test_operations import ready

pytestmark = pytest.mark.slow  # workers in subprocesses, long backlogs

TEXT = "text-classification"


@pytest.fixture
def rabbit(amqp_url, redis_url, s3_endpoint, tiny_models, redis_db, tmp_path, s3):
    """``make(batch, **settings)``: settings with RabbitMQ as the broker on a queue of this test's own, their config
    file and a client (closed after the test)."""
    clients: list[Client] = []

    def make(batch: dict | None = None, **overrides):
        settings = rabbitmq_settings(
            amqp_url, redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, redis_db, batch, **overrides
        )
        clients.append(Client(settings))
        return settings, write_config(settings, tmp_path / "pipeq.toml"), clients[-1]

    yield make
    for client in clients:
        client.close()


def stop(worker) -> None:
    """SIGTERM: the worker drains (acks what it finished, gives back the rest) and exits."""
    worker.send_signal(signal.SIGTERM)
    worker.wait(60)


def nothing_left(settings) -> bool:
    """Whether the queue and its high sibling are empty: once no worker holds a connection, every message not
    acked is back there."""
    return not any(ready_messages(settings, settings.models[0].queue).values())


@pytest.mark.parametrize("priorities", [["normal"], ["low", "normal", "high"]], ids=["normal", "mixed-priorities"])
def test_a_worker_killed_mid_batch_loses_no_job(rabbit, tmp_path, priorities):
    settings, config, client = rabbit({"max_batch_jobs": 2, "max_wait_s": 0.01}, dead_after_s=3)
    queue = settings.models[0].queue
    log = tmp_path / "worker.log"
    ids = submit_by_priority(client, priorities)
    first = start_worker_process(config, queue, log)
    try:
        wait_until(caught_mid_batch(client, ids), 120, message=f"never caught the worker mid-batch; its log: {log}")
        kill(first)
        states = [r.state for r in client.store.get_many(ids)]
        assert states.count("succeeded") < len(ids), "the worker finished before it could be killed"
    finally:
        if first.poll() is None:
            kill(first)
    assert not nothing_left(settings), "the killed worker left nothing to redeliver"

    second = start_worker_process(config, queue, log, plain_celery=True)  # `celery -A pipeq.worker.app worker`
    try:
        records = client.wait_many(ids, timeout=120)
        stop(second)  # acks what it finished
    except TimeoutError:
        states = Counter(record.state for record in client.store.get_many(ids))
        raise AssertionError(f"jobs left undone: {states}; waiting {ready_messages(settings, queue)}") from None
    finally:
        if second.poll() is None:
            kill(second)
    assert {record.state for record in records.values()} == {"succeeded"}, log.read_text()[-3000:]
    assert {record.priority for record in records.values()} == set(priorities)
    assert "plain" in {record.worker.split("@")[0] for record in records.values()}
    assert nothing_left(settings)


def test_jobs_held_longer_than_dead_after_run_once(rabbit, tmp_path):
    """One job per micro-batch and a prefetch that takes every job at once: the last ones stay unacked in the
    worker far longer than dead_after_s, and none is redelivered (RabbitMQ keeps them with the live connection)."""
    dead_after_s, jobs = 3, 800
    settings, _, client = rabbit({"max_batch_jobs": 1, "max_wait_s": 0.01}, dead_after_s=dead_after_s)
    roomy = settings.models[0].model_copy(update={"name": "roomy", "max_batch_jobs": jobs, "queue": "roomy-unused"})
    settings = settings.model_copy(update={"models": [settings.models[0], roomy]})
    config = write_config(settings, tmp_path / "holding.toml")
    silent_window_s = 3 * heartbeat_s(settings)  # held past this, a job would be lost with a dead connection
    inputs = with_slow_jobs([f"review number {i} was fine" for i in range(jobs)], silent_window_s)
    ids = client.submit_many(TEXT, inputs, model=settings.models[0].name)
    log = tmp_path / "worker.log"
    worker = start_hooked(["--device", "cpu", "--queues", settings.models[0].queue], config, log, tmp_path / "hook")
    try:
        records = client.wait_many(ids, timeout=180)
        time.sleep(dead_after_s)  # a redelivery of a job that just finished would show up now
        later = client.store.get_many(ids)
    finally:
        kill(worker)
    assert {record.state for record in records.values()} == {"succeeded"}, log.read_text()[-3000:]
    started = sorted(record.started_at for record in records.values())
    waited = (started[-1] - started[0]).total_seconds()
    assert waited > silent_window_s, f"the last job waited only {waited:.1f} s: nothing held long"
    assert {record.attempts for record in records.values()} == {1}
    assert [record.model_dump() for record in later] == [records[job_id].model_dump() for job_id in ids]
    assert nothing_left(settings)


@pytest.mark.own_worker
def test_a_high_job_overtakes_a_backlog_on_rabbitmq_3(rabbit):
    """RabbitMQ 3 quorum queues ignore message priorities: the high job comes through its sibling queue."""
    settings, _, client = rabbit()
    # One more than on Redis: the delivery crosses the consumer's event loop, which also settles the batch before.
    check_a_high_job_overtakes_a_backlog(settings, client, backlog=2000, most_batches=3)


def test_sigterm_drains_finishes_the_batch_in_hand_and_gives_back_the_rest(rabbit, tmp_path):
    settings, _, client = rabbit({"max_batch_jobs": 4, "expected_seconds": 10.0})
    settings = settings.model_copy(update={"metrics": Metrics(port=free_port())})
    config = write_config(settings, tmp_path / "drain.toml")
    check_sigterm_drains(
        settings,
        config,
        client,
        tmp_path,
        waiting=lambda: ready_messages(settings, settings.models[0].queue)["queue"],
        worker_ready=lambda: ready(settings.metrics.port),
    )  # a gone worker's connection is closed: RabbitMQ holds nothing for it


DEAD_AFTER_S = 9
"""A heartbeat of 3 s: a worker silent for 6 to 9 s is dead, one paused for up to 5 s keeps its jobs."""
BURST = 240


@pytest.fixture
def three_workers(rabbit, tmp_path):
    settings, config, client = rabbit({"max_batch_jobs": 4, "max_wait_s": 0.01}, dead_after_s=DEAD_AFTER_S)
    queue = settings.models[0].queue
    workers = [start_worker_process(config, queue, tmp_path / f"worker{n}.log") for n in range(3)]
    yield client, workers
    for worker in workers:
        if worker.poll() is None:
            kill(worker)


def test_a_killed_workers_jobs_go_to_the_others(three_workers):
    client, workers = three_workers
    ids = burst_caught_running(client, workers[0], "killed", BURST)
    name = node(workers[0])
    workers[0].send_signal(signal.SIGSTOP)  # frozen, so that what it runs now is what it runs when killed
    held = running_on(client, ids, workers[0])
    kill(workers[0])  # its connection closes: RabbitMQ gives what it held to the others at once
    records = client.wait_many(ids, timeout=120)
    assert {record.state for record in records.values()} == {"succeeded"}
    assert held and all(not records[job_id].worker.startswith(name) for job_id in held)  # finished by the others
    assert {records[job_id].attempts for job_id in held} == {2}


def test_a_worker_paused_for_less_than_dead_after_keeps_its_jobs(three_workers):
    client, workers = three_workers
    check_a_short_pause_keeps_the_jobs(client, workers, BURST, DEAD_AFTER_S / 3)


def test_a_worker_paused_longer_loses_its_jobs_and_its_late_results_are_discarded(three_workers):
    client, workers = three_workers
    check_a_long_pause_loses_the_jobs(client, workers, BURST, DEAD_AFTER_S)


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(rabbit, tmp_path):
    settings, config, client = rabbit({"max_wait_s": 0.01})
    queue = settings.models[0].queue
    poison = client.submit(TEXT, f"this one {MARKER}s its worker")  # its pipeline call never returns
    for attempt in range(1, settings.max_attempts + 1):
        log = tmp_path / f"worker{attempt}.log"
        worker = start_hooked(["--device", "cpu", "--queues", queue], config, log, tmp_path / "hook")
        try:
            wait_until(
                lambda: (record := client.store.get(poison)).state == "running" and record.attempts == attempt,  # noqa: B023
                120,
                message=lambda: f"attempt {attempt} never started: {client.store.get(poison)}; log: {log}",  # noqa: B023
            )
        finally:
            kill(worker)
    last = start_worker_process(config, queue, tmp_path / "last.log")
    try:
        wait_until(lambda: client.store.get(poison).done, 120, message=lambda: str(client.store.get(poison)))
        stop(last)  # a drain gives back whatever it still holds: the poison message too, had it not been acked
    finally:
        if last.poll() is None:
            kill(last)
    record = client.store.get(poison)
    assert (record.state, record.error.type, record.attempts) == ("failed", "TooManyAttempts", settings.max_attempts)
    assert f"max_attempts = {settings.max_attempts}" in record.error.message
    assert nothing_left(settings)  # acked, not requeued


@pytest.mark.own_worker
def test_a_malformed_message_fails_its_job_and_is_acked(rabbit):
    settings, _, client = rabbit()
    queue = settings.models[0].queue
    with Connection(settings.broker_url) as connection:
        channel = connection.default_channel
        client.celery.amqp.queues[queue].bind(channel).declare()
        for job_id, body in [("malformed-1", b"{this is not json"), (["not", "an", "id"], b"[]")]:
            message = channel.prepare_message(
                body,
                content_type="application/json",
                content_encoding="utf-8",
                headers={"task": TASK_NAME, "id": job_id},
            )
            channel.basic_publish(message, exchange="", routing_key=queue)
    with worker_thread(create_app(settings), queues=[queue]):
        wait_until(lambda: client.store.get("malformed-1") is not None, 60, message="the message was never read")
        time.sleep(1)  # the second one, with no job id to record a failure under, is read too
    record = client.store.get("malformed-1")
    assert (record.state, record.error.type, record.attempts) == ("failed", "InvalidJob", 1)
    assert nothing_left(settings)  # both acked: none came back when the worker's connection closed
