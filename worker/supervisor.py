"""``pipeq worker --devices``'s supervision of its worker children: started together, stopped together, and a child
that crashed restarted.

A child whose watchdog ended it (:data:`~pipeq.worker.watchdog.OVERDUE_EXIT_CODE`) or that a signal killed (the
kernel's out-of-memory killer, a segfault, the watchdog's kernel alarm) is restarted after a back-off (1 s, doubled
each time up to 30 s); one that needs more than :data:`MAX_RESTARTS_PER_MINUTE` restarts in a minute is in a crash
loop, so everything stops, saying so. Any other exit (a configuration error, a clean exit) stops the others too:
restarting would not help. SIGTERM or SIGINT to the parent reaches every child.
"""

import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from pipeq.worker.watchdog import OVERDUE_EXIT_CODE

STOP_TIMEOUT = 120.0
"""Seconds the children get to drain after a stop before they are killed, unless told otherwise."""
MAX_RESTARTS_PER_MINUTE = 5
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class Child:
    """One supervised worker: how to start it, the running process, and when it was restarted."""

    command: list[str]
    env: dict[str, str]
    label: str
    process: subprocess.Popen | None = None
    restarts: deque[float] = field(default_factory=deque)
    restart_at: float | None = None

    def start(self) -> None:
        # Own process group: a terminal's Ctrl-C reaches the parent only, which forwards one SIGTERM.
        self.process = subprocess.Popen(self.command, env=self.env, process_group=0)
        self.restart_at = None
        _say(f"worker pid {self.process.pid} on {self.label}")


def restartable(returncode: int) -> bool:
    """Whether a child that exited with ``returncode`` crashed in a way a restart mends: ended by its watchdog, or
    killed by a signal other than a stop."""
    return returncode == OVERDUE_EXIT_CODE or (returncode < 0 and -returncode not in _STOP_SIGNALS)


def describe(returncode: int) -> str:
    """How a child ended, in words."""
    if returncode == OVERDUE_EXIT_CODE:
        return f"exited with {returncode}: its watchdog ended it, a pipeline call ran past its run time limit"
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -returncode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with {returncode}"


def supervise(
    commands: list[tuple[list[str], dict[str, str]]], labels: list[str], stop_timeout: float = STOP_TIMEOUT
) -> int:
    """Run ``commands`` as supervised children (see the module docstring) until a signal stops them (0) or one
    ends for good (non-zero); a stop gives them ``stop_timeout`` seconds to drain before they are killed."""
    stop_requested: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: stop_requested.append(signum)) for sig in _STOP_SIGNALS}
    children = [Child(command, env, label) for (command, env), label in zip(commands, labels, strict=True)]
    ended: tuple[Child, int] | None = None
    try:
        for child in children:
            child.start()
        while not stop_requested and ended is None:
            time.sleep(0.2)
            ended = _tend(children)
    finally:
        _stop([child.process for child in children if child.process is not None], stop_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if ended is None:
        codes = [child.process.returncode for child in children if child.process is not None]
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
    child, returncode = ended
    return returncode if returncode > 0 else 1


def _tend(children: list[Child]) -> tuple[Child, int] | None:
    """Restart the children due for it and schedule those that crashed; the child (and its exit status) whose end
    stops everything, if one did."""
    now = time.monotonic()
    for child in children:
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.start()
            continue
        returncode = child.process.poll() if child.process is not None else None
        if returncode is None:
            continue
        pid = child.process.pid
        if not restartable(returncode):
            _say(f"worker pid {pid} on {child.label} {describe(returncode)}; stopped the others")
            return child, returncode
        while child.restarts and now - child.restarts[0] > 60:
            child.restarts.popleft()
        if len(child.restarts) >= MAX_RESTARTS_PER_MINUTE:
            _say(
                f"worker pid {pid} on {child.label} {describe(returncode)}, after {len(child.restarts)} restarts "
                "within a minute: a crash loop, so everything stops; see the worker's log above"
            )
            return child, returncode
        backoff = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** len(child.restarts))
        child.restarts.append(now)
        child.restart_at = now + backoff
        _say(f"worker pid {pid} on {child.label} {describe(returncode)}; restarting it in {backoff:g} s")
    return None


def _stop(processes: list[subprocess.Popen], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (the workers' drain) to every live child, then wait; kill those still there after ``timeout``."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _say(message: str) -> None:
    print(f"pipeq: {message}", file=sys.stderr, flush=True)
