"""Worker subprocesses for tests that kill workers; their config file comes from ``devtools.config_files``."""

import os
import signal
import subprocess
import sys
from pathlib import Path

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
