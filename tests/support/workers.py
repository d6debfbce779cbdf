"""Worker subprocesses for tests that kill workers, and the TOML config file they read."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _toml_value(value: object) -> str:
    return json.dumps(value)  # JSON strings, numbers and booleans are valid TOML


def write_config(settings: Settings, path: Path) -> Path:
    """Write ``settings`` as a pipeq TOML config file (the format of config/pipeq.example.toml)."""
    data = settings.model_dump(mode="json", exclude={"config", "models", "limits"}, exclude_none=True)
    if settings.s3_secret_access_key:
        data["s3_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items()]
    lines.append("[limits]")
    lines += [f"{key} = {_toml_value(value)}" for key, value in settings.limits.model_dump().items()]
    for entry in settings.models:
        lines.append("[[models]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in entry.model_dump(exclude_none=True).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_worker_process(
    config: Path, queues: str = "pipeq", log: Path | None = None, plain_celery: bool = False
) -> subprocess.Popen:
    """``pipeq worker --device cpu`` (or plain ``celery -A worker.app worker``) in a subprocess reading ``config``."""
    env = dict(os.environ, PIPEQ_CONFIG=str(config))
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    if plain_celery:
        command = ["-m", "celery", "-A", "worker.app", "worker", "-Q", queues, "-n", "plain@%h", "-l", "INFO"]
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
