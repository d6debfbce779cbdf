"""``pipeq worker``: Celery worker processes, each pinned to one device.

The device is fixed before torch is imported: ``cuda:N`` exposes only GPU N to the process
(``CUDA_VISIBLE_DEVICES=N``, seen inside as ``cuda:0``); ``cuda:N,M`` exposes GPUs N and M (as ``cuda:0`` and
``cuda:1``, for models spread over several); ``cpu`` hides every GPU.

``pipeq worker --devices all|0,1|cpu`` runs one such worker per device as child processes, supervised
(:mod:`pipeq.worker.supervisor`): SIGTERM or SIGINT to the parent reaches every child; a child that crashed (its
watchdog ended it, a signal killed it) is restarted, a crash loop or any other exit stops the others.
"""

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from pipeq.config.settings import drain_timeout, load_settings
from pipeq.core.messaging import node_name
from pipeq.ops.http import PortInUse, check_port_free
from pipeq.worker.supervisor import supervise

_GPU_LIST = re.compile(r"^\d+(,\d+)*$")
STOP_MARGIN_S = 5.0
"""How much longer than a child's drain timeout the supervisor waits before killing it."""


def pin_device(device: str, environ: dict[str, str] | None = None) -> str:
    """Set ``CUDA_VISIBLE_DEVICES`` for ``device`` in ``environ`` and return the device as seen inside."""
    environ = os.environ if environ is None else environ
    if device == "cpu":
        environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if device.startswith("cuda:") and _GPU_LIST.match(device[5:]):
        environ["CUDA_VISIBLE_DEVICES"] = device[5:]
        return "cuda:0"
    raise ValueError(f"device {device!r} must be cpu or cuda:N (N a GPU index)")


def gpu_indices(environ: Mapping[str, str] | None = None) -> list[int]:
    """The GPUs this machine offers, found without importing torch (CUDA_VISIBLE_DEVICES, nvidia-smi, /proc)."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and (visible == "" or _GPU_LIST.match(visible)):
        return [int(index) for index in visible.split(",") if index]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True)
        return list(range(sum(line.startswith("GPU ") for line in listing.stdout.splitlines())))
    except (OSError, subprocess.SubprocessError):
        gpus = Path("/proc/driver/nvidia/gpus")
        return list(range(len(list(gpus.iterdir())))) if gpus.is_dir() else []


def parse_devices(text: str, gpus: list[int] | None = None) -> list[str]:
    """The devices ``--devices`` names: ``all`` (every GPU, else cpu), ``cpu``, or GPU indices ``0,1``."""
    text = text.strip()
    if text == "cpu":
        return ["cpu"]
    if text == "all":
        gpus = gpu_indices() if gpus is None else gpus
        if not gpus:
            print(
                "pipeq: --devices all found no GPU (nvidia-smi, /proc/driver/nvidia): one worker on cpu",
                file=sys.stderr,
            )
            return ["cpu"]
        return [f"cuda:{index}" for index in gpus]
    indices = [part.strip().removeprefix("cuda:") for part in text.split(",")]
    if not all(index.isdigit() for index in indices):
        raise ValueError(f"--devices takes all, cpu or GPU indices such as 0,1; not {text!r}")
    if len(set(indices)) != len(indices):
        raise ValueError(f"--devices names a GPU twice: {text!r}")
    return [f"cuda:{int(index)}" for index in indices]


def child_command(
    device: str,
    queues: list[str] | None,
    loglevel: str,
    name: str | None,
    environ: Mapping[str, str] | None = None,
    metrics_port: int | None = None,
    task_events: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the ``pipeq worker --device`` child serving ``device``; it serves its
    metrics on ``metrics_port`` (each child its own)."""
    env = dict(os.environ if environ is None else environ)
    pin_device(device, env)  # the child would do it too: no GPU is ever seen before the pin
    if metrics_port is not None:
        env["PIPEQ_METRICS__PORT"] = str(metrics_port)
    command = [sys.executable, "-m", "pipeq.cli", "worker", "--device", device, "--loglevel", loglevel]
    if queues:
        command += ["--queues", ",".join(queues)]
    if name:
        base, at, host = name.partition("@")
        command += ["--name", f"{base}-{device.replace(':', '')}{at}{host}"]
    if task_events:
        command.append("--task-events")
    return command, env


def run_workers(
    devices: list[str],
    queues: list[str] | None,
    loglevel: str = "INFO",
    name: str | None = None,
    task_events: bool = False,
) -> int:
    """Run one worker child per device until a signal stops them all or one ends for good; the exit status. The
    N-th child serves its metrics on ``[metrics] port`` + N; a stop gives the children their drain timeout."""
    settings = load_settings()
    base = settings.metrics.port
    commands = [
        child_command(device, queues, loglevel, name, None, None if base is None else base + i, task_events)
        for i, device in enumerate(devices)
    ]
    stop_timeout = drain_timeout(settings, queues or settings.catalogue.queues()) + STOP_MARGIN_S
    return supervise(commands, devices, stop_timeout)


def run_worker(
    device: str,
    queues: list[str] | None,
    loglevel: str = "INFO",
    name: str | None = None,
    task_events: bool = False,
) -> None:
    """Pin this process to ``device`` and run the worker on ``queues`` (default: every catalogue queue)."""
    if "torch" in sys.modules:
        raise RuntimeError("torch was imported before the device was pinned")
    os.environ["PIPEQ_DEVICE"] = pin_device(device)
    from pipeq.worker.app import app
    from pipeq.worker.pipelines import check_can_load

    app.pipeq_device_label = device  # metrics name the device pinned to, not the one seen inside (cuda:0)
    settings = app.pipeq_settings
    queues = queues or settings.catalogue.queues() or ["pipeq"]
    try:
        check_can_load(settings.catalogue.for_queues(queues), settings.device)
        check_port_free(settings.metrics)
    except (ValueError, PortInUse) as exc:
        raise SystemExit(f"pipeq worker: {exc}") from None
    label = device.replace(":", "")
    app.worker_main(
        [
            "worker",
            f"--queues={','.join(queues)}",
            f"--loglevel={loglevel}",
            f"--hostname={node_name(label, name)}",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            *(["--task-events"] if task_events else []),
        ]
    )
