"""``pipeq worker``: one Celery worker process pinned to one device.

The device is fixed before torch is imported: ``cuda:N`` exposes only GPU N to the process
(``CUDA_VISIBLE_DEVICES=N``, seen inside as ``cuda:0``); ``cpu`` hides every GPU.
"""

import os
import sys


def pin_device(device: str, environ: dict[str, str] | None = None) -> str:
    """Set ``CUDA_VISIBLE_DEVICES`` for ``device`` in ``environ`` and return the device as seen inside."""
    environ = os.environ if environ is None else environ
    if device == "cpu":
        environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if device.startswith("cuda:") and device[5:].isdigit():
        environ["CUDA_VISIBLE_DEVICES"] = device[5:]
        return "cuda:0"
    raise ValueError(f"device {device!r} must be cpu or cuda:N (N a GPU index)")


def run_worker(device: str, queues: list[str] | None, loglevel: str = "INFO", name: str | None = None) -> None:
    """Pin this process to ``device`` and run the worker on ``queues`` (default: every catalogue queue)."""
    if "torch" in sys.modules:
        raise RuntimeError("torch was imported before the device was pinned")
    os.environ["PIPEQ_DEVICE"] = pin_device(device)
    from worker.app import app

    queues = queues or app.pipeq_settings.catalogue.queues() or ["pipeq"]
    label = device.replace(":", "")
    app.worker_main(
        [
            "worker",
            f"--queues={','.join(queues)}",
            f"--loglevel={loglevel}",
            f"--hostname={name or f'pipeq-{label}@%h'}",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
        ]
    )
