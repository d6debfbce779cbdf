"""Worker processes whose pipelines never return on a marked input: a call stuck where Python cannot stop it, as
far as the worker can tell. Test-only: a ``sitecustomize`` module on the worker's PYTHONPATH patches
transformers' ``Pipeline.__call__`` once transformers loads it (not before: the worker pins its device first)."""

import os
import subprocess
import sys
from pathlib import Path

from tests.support.workers import ROOT

MARKER = "HANG"
"""A text input containing this never comes back from the pipeline."""
SLOW_MARKER = "SLOW"
"""A pipeline call on a text containing this takes :data:`SLOW_SECONDS` longer."""
SLOW_SECONDS = 3

_SITECUSTOMIZE = f'''
"""Written by tests/support/hang_hook.py: pipeline calls on a text containing {MARKER!r} never return; on one
containing {SLOW_MARKER!r} they take {SLOW_SECONDS} s longer."""

import importlib.abc
import importlib.util
import sys
import time


def _hanging(call):
    def __call__(self, inputs, *args, **kwargs):
        texts = inputs if isinstance(inputs, list) else [inputs]
        if any(isinstance(text, str) and {MARKER!r} in text for text in texts):
            while True:
                time.sleep(1)
        if any(isinstance(text, str) and {SLOW_MARKER!r} in text for text in texts):
            time.sleep({SLOW_SECONDS})
        return call(self, inputs, *args, **kwargs)

    return __call__


class _PatchPipelines(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "transformers.pipelines.base":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            module.Pipeline.__call__ = _hanging(module.Pipeline.__call__)

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchPipelines())
'''


def with_slow_jobs(inputs: list[str], longer_than_s: float) -> list[str]:
    """``inputs`` with enough of them marked slow, spread out, that a worker running them one job per micro-batch
    starts its last job more than ``longer_than_s`` after its first, however fast the machine: every job but the
    last one started runs between those two starts, less at most one prepared ahead."""
    slow = int(longer_than_s // SLOW_SECONDS) + 3
    if slow > len(inputs):
        raise ValueError(f"{len(inputs)} inputs cannot hold {slow} slow ones")
    step = len(inputs) // slow
    return [f"{SLOW_MARKER} {text}" if i % step == 0 and i // step < slow else text for i, text in enumerate(inputs)]


def start_hanging_workers(config: Path, queues: str, log: Path, hook_dir: Path) -> subprocess.Popen:
    """``pipeq worker --devices cpu`` (the supervisor and its one child) with the hang hook, output to ``log``."""
    return start_hooked(["--devices", "cpu", "--queues", queues], config, log, hook_dir)


def start_hooked(arguments: list[str], config: Path, log: Path, hook_dir: Path, **env: str) -> subprocess.Popen:
    """``pipeq worker ARGUMENTS`` with the hang hook and ``env`` added, output to ``log``."""
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    pythonpath = os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PIPEQ_CONFIG=str(config), PYTHONPATH=pythonpath, **env)
    command = [sys.executable, "-m", "pipeq.cli", "worker", *arguments]
    with open(log, "ab") as output:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
