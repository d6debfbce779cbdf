"""The watchdog: a worker never holds jobs behind a pipeline call that will not return.

Python cannot interrupt a call stuck in native code, so when the model thread's call runs past its deadline and
the grace (:mod:`pipeq.worker.deadlines`), the watchdog has the engine settle what it holds (the call's job
failed, or its jobs requeued; every other job requeued for other workers) and ends the process with
:data:`OVERDUE_EXIT_CODE`. Its supervisor restarts it: ``pipeq worker --devices`` (:mod:`pipeq.worker.supervisor`),
compose's ``restart: unless-stopped``, Kubernetes.

A call that holds the GIL starves every Python thread, this one included. Where the worker owns its process, a
kernel alarm is the backstop: re-armed at every tick, it fires only once the watchdog has been starved well past
any deadline, and then ``faulthandler`` prints every thread's stack before SIGALRM ends the process.
"""

import faulthandler
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable

from pipeq.worker.deadlines import CallWatch, RunningCall, grace_s

log = logging.getLogger(__name__)

OVERDUE_EXIT_CODE = 75
"""The exit status of a worker ended by its watchdog (EX_TEMPFAIL: restart it)."""
TICK_S = 0.5
"""How often the watchdog looks at the running call."""
STARVED_S = 120
"""How long the watchdog may go unscheduled past the current call's grace (or at any time, between calls) before
the kernel alarm ends the process."""


class Watchdog:
    """Watches the model thread's calls; see the module docstring. ``on_overdue`` settles the engine's jobs
    (it must not raise); ``end_process`` ends the process, or is None where the worker does not own it (a worker
    in another program's thread: the overdue call is then only logged, and its messages are no longer kept
    alive, so the broker redelivers them)."""

    def __init__(
        self,
        watch: CallWatch,
        on_overdue: Callable[[RunningCall], None],
        end_process: Callable[[int], None] | None = None,
    ) -> None:
        self.watch = watch
        self.on_overdue = on_overdue
        self.end_process = end_process
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: RunningCall | None = None

    def start(self) -> None:
        """Start watching (from the main thread where ``end_process`` is set: the kernel alarm is armed there)."""
        if self.end_process is not None:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            if sys.__stderr__ is not None:  # the process's own stderr: Celery replaces sys.stderr with a logger
                faulthandler.register(signal.SIGALRM, file=sys.__stderr__, all_threads=True, chain=True)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="pipeq-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.end_process is not None:
            signal.alarm(0)

    def _loop(self) -> None:
        while not self._stopping.wait(TICK_S):
            call = self.watch.current
            if self.end_process is not None:
                signal.alarm(self._alarm_s(call))
            if call is not None and time.monotonic() > call.deadline + grace_s(call.limit_s):
                self._overdue(call)

    @staticmethod
    def _alarm_s(call: RunningCall | None) -> int:
        """Seconds until the kernel alarm: past the current call's grace (if any), plus STARVED_S."""
        if call is None:
            return STARVED_S
        left = call.deadline + grace_s(call.limit_s) - time.monotonic()
        return STARVED_S + max(0, math.ceil(left))

    def _overdue(self, call: RunningCall) -> None:
        if self._reported is call:
            return
        self._reported = call
        elapsed = time.monotonic() - call.started
        if self.end_process is None:
            log.critical(
                "a pipeline call of %d job(s) has run %.0f s, past its run time limit of %g s, and cannot be stopped "
                "from this thread; its jobs are no longer kept alive, so the broker redelivers them",
                len(call.jobs),
                elapsed,
                call.limit_s,
            )
            return
        log.critical(
            "a pipeline call of %d job(s) has run %.0f s, past its run time limit of %g s, and cannot be stopped: "
            "settling the jobs this worker holds and ending the process (exit status %d) for its supervisor to "
            "restart",
            len(call.jobs),
            elapsed,
            call.limit_s,
            OVERDUE_EXIT_CODE,
        )
        try:
            self.on_overdue(call)
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            self.end_process(OVERDUE_EXIT_CODE)
