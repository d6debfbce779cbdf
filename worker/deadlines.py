"""Run time limits of pipeline calls: which call the model thread is in, for which jobs, and until when.

Every pipeline call gets its model's run time limit (``ModelEntry.run_time_limit()``). The model thread enters
each call through :meth:`CallWatch.running`, so the watchdog (:mod:`pipeq.worker.watchdog`) and the keep-alive
can see a call past its deadline and the jobs it holds. Generation stops by the deadline on its own: every
``generate()`` call of a watched model gets the seconds left as ``max_time`` (:func:`limit_generation`). A call
that returns past its deadline, stopped that way or merely late, fails its job with
:class:`~pipeq.worker.errors.JobTimeout` (a shared call is split first, so only the slow job fails).
"""

import copy
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pipeq.worker.errors import JobTimeout
from pipeq.worker.pieces import CallProgress, steering_criterion


def grace_s(limit_s: float) -> float:
    """How long past its deadline a call may still return before the watchdog ends the process: enough for a
    generation stopped by ``max_time`` to finish its step and post-process."""
    return max(5.0, limit_s / 10)


def timeout_failure(limit_s: float, restarted: str | None = None) -> JobTimeout:
    """The failure of a job whose call ran past ``limit_s`` (and, if it could not be stopped, the worker ended)."""
    ended = f"; the call could not be stopped, so worker {restarted} ended to free its device" if restarted else ""
    return JobTimeout(
        f"ran past this model's run time limit of {limit_s:g} s (run_time_limit_s in the catalogue){ended}: send a "
        "smaller input or ask for less work (fewer new tokens, labels, frames), or raise run_time_limit_s"
    )


@dataclass(frozen=True)
class RunningCall:
    """One pipeline call in progress: since when (``time.monotonic()``), its limit, and the jobs it holds."""

    started: float
    limit_s: float
    jobs: Sequence[Any]
    progress: CallProgress = field(default_factory=CallProgress)
    """What the call has done, where it works in pieces, and whether it is to stop (:mod:`pipeq.worker.pieces`)."""

    @property
    def deadline(self) -> float:
        return self.started + self.limit_s

    def overran(self, at: float | None = None) -> bool:
        """Whether the call is (or ended) past its deadline."""
        return (time.monotonic() if at is None else at) > self.deadline


class CallWatch:
    """The pipeline call the model thread is in now, if any (one model thread per engine, one call at a time)."""

    def __init__(self) -> None:
        self.current: RunningCall | None = None
        self.began = threading.Event()
        """Set whenever a call begins: who waits for calls (the engine's steering) clears it."""

    @contextmanager
    def running(self, limit_s: float, jobs: Sequence[Any]) -> Iterator[RunningCall]:
        """Watch one call of ``jobs`` with a run time limit of ``limit_s`` seconds, while the block runs."""
        call = RunningCall(time.monotonic(), limit_s, jobs)
        self.current = call
        self.began.set()
        try:
            yield call
        finally:
            self.current = None

    def overdue_jobs(self) -> Sequence[Any]:
        """The jobs of the current call once it is past its deadline; none otherwise."""
        call = self.current
        return call.jobs if call is not None and call.overran() else ()


@dataclass(frozen=True)
class CallDeadlines:
    """What :func:`pipeq.worker.runner.run_group` needs to watch its calls: the watch, the limit of each call,
    the job of each of its items (what the watchdog settles), and whom to tell how long each call took."""

    watch: CallWatch
    limit_s: float
    jobs: Sequence[Any]
    on_call: Callable[[int, float], None] = lambda inputs, seconds: None
    """Told of each call that returned: its number of inputs, its seconds."""

    @contextmanager
    def running(self, indices: Sequence[int]) -> Iterator[RunningCall]:
        """The context of one call on the items at ``indices``: yields its :class:`RunningCall`."""
        with self.watch.running(self.limit_s, [self.jobs[i] for i in indices]) as call:
            yield call
        self.on_call(len(indices), time.monotonic() - call.started)


def limit_generation(pipe: Any, watch: CallWatch) -> None:
    """Make every ``generate()`` call of ``pipe``'s model end by the deadline of the call it runs in: it gets the
    seconds left as ``max_time`` (or the job's own ``max_time`` when shorter); and count its tokens into the call's
    progress, stopping at the next token once the call's jobs are canceled. Models that do not generate, and
    models already limited by this watch, are left as they are; generate() outside a watched call is unchanged."""
    model = getattr(pipe, "model", None)
    generate = getattr(model, "generate", None)
    if generate is None or getattr(generate, "pipeq_watch", None) is watch:
        return

    @functools.wraps(generate)
    def generate_by_deadline(*args: Any, **kwargs: Any) -> Any:
        call = watch.current
        if call is not None:
            left = max(call.deadline - time.monotonic(), 0.001)
            if (config := kwargs.get("generation_config")) is not None:  # then generate() reads max_time there
                config = kwargs["generation_config"] = copy.deepcopy(config)
                config.max_time = min(config.max_time or left, left)
            else:
                kwargs["max_time"] = min(kwargs.get("max_time") or left, left)
            _steer(model, call, kwargs)
        return generate(*args, **kwargs)

    generate_by_deadline.pipeq_watch = watch  # type: ignore[attr-defined]
    model.generate = generate_by_deadline


def _steer(model: Any, call: RunningCall, kwargs: dict) -> None:
    """Add to a generate() call's ``kwargs`` the criterion that counts its tokens and stops it once canceled."""
    from transformers import StoppingCriteriaList

    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    max_new = kwargs.get("max_new_tokens") or getattr(config, "max_new_tokens", None)
    criteria = StoppingCriteriaList(kwargs.get("stopping_criteria") or [])
    criteria.append(steering_criterion(call.progress, max_new if isinstance(max_new, int) else None))
    kwargs["stopping_criteria"] = criteria
