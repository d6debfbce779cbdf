"""The one wait-until helper: poll a condition until it holds, fail the test when it never does."""

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> None:
    """Return once ``condition()`` is truthy, checking every ``interval`` seconds; AssertionError with ``message``
    (a string, or a callable made at the time of failure, e.g. to show a worker log's tail) or one naming the
    timeout when it is still false after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(text or f"the condition did not hold within {timeout} s")
        time.sleep(interval)
