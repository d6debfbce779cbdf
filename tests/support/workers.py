"""Workers for tests: subprocesses for tests that kill workers (their config file comes from
``devtools.config_files``), and threads of their own beside the session's worker."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu.asynchronous import get_event_loop, set_event_loop

ROOT = Path(__file__).resolve().parents[2]


def start_worker_process(
    config: Path, queues: str = "pipeq", log: Path | None = None, plain_celery: bool = False
) -> subprocess.Popen:
    """``pipeq worker --device cpu`` (or plain ``celery -A pipeq.worker.app worker``) in a subprocess."""
    env = dict(os.environ, PIPEQ_CONFIG=str(config))
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    if plain_celery:
        command = ["-m", "celery", "-A", "pipeq.worker.app", "worker", "-Q", queues, "-n", "plain@%h", "-l", "INFO"]
    else:
        command = ["-m", "pipeq.cli", "worker", "--device", "cpu", "--queues", queues, "--loglevel", "INFO"]
    return subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def kill(process: subprocess.Popen) -> None:
    """kill -9, as a crash would."""
    process.send_signal(signal.SIGKILL)
    process.wait(10)


@contextmanager
def worker_thread(app: Celery, **options: Any) -> Iterator[Any]:
    """A real worker of ``app`` in a thread (Celery's ``start_worker``), for tests marked ``own_worker``.

    Celery's test worker stops by setting the process-wide ``should_terminate``, which ends every worker loop of
    the process: such tests run before the session's worker starts (tests/conftest.py orders them first). Each gets
    a kombu event loop of its own, so none inherits the loop of one stopped before it.
    """
    previous = get_event_loop()
    set_event_loop(None)
    try:
        options = {"perform_ping_check": False, "queues": ["pipeq"], "shutdown_timeout": 60, **options}
        with start_worker(app, loglevel="WARNING", **options) as worker:
            yield worker
    finally:
        set_event_loop(previous)
