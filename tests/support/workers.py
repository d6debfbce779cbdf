"""Worker subprocesses for tests that kill workers, and the TOML config file they read."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeq.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _toml_value(value: object) -> str:
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(value)  # JSON strings, numbers and booleans are valid TOML


def write_config(settings: Settings, path: Path) -> Path:
    """Write ``settings`` as a pipeq TOML config file (the format of config/pipeq.example.toml)."""
    data = settings.model_dump(mode="json", exclude={"config"}, exclude_none=True)
    for name, secret in (("s3_secret_access_key", settings.s3_secret_access_key),):
        if secret:
            data[name] = secret.get_secret_value()
    if settings.webhooks.secret:
        data["webhooks"]["secret"] = settings.webhooks.secret.get_secret_value()
    scalars = {key: value for key, value in data.items() if not isinstance(value, dict | list)}
    lines = [f"{key} = {_toml_value(value)}" for key, value in scalars.items()]
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{name} = {_toml_value(item)}" for name, item in value.items()]
        elif isinstance(value, list):
            for entry in value:
                lines.append(f"[[{key}]]")
                lines += [f"{name} = {_toml_value(item)}" for name, item in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


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
