"""The micro-batcher: items wait per group key until the group is full or its oldest item waited long enough.

It knows nothing of tasks: a key's limits come from a function, items are opaque.
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
Limits = Callable[[Hashable], tuple[int, float]]
"""key -> (most items in one batch, seconds the oldest item may wait)"""


class MicroBatcher(Generic[T]):
    """A thread-safe buffer handing out batches of items that share a key."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._groups: dict[Hashable, deque[tuple[float, T]]] = {}
        self._cond = threading.Condition()
        self._closed = False

    def put(self, key: Hashable, item: T) -> None:
        """Add ``item`` to the group ``key``."""
        with self._cond:
            self._groups.setdefault(key, deque()).append((self._clock(), item))
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return sum(len(group) for group in self._groups.values())

    def get(
        self, timeout: float | None = None, eager: Callable[[], bool] = lambda: False
    ) -> tuple[Hashable, list[T]] | None:
        """The next ready batch: a full group, or the group whose oldest item waited longest past its limit.

        While ``eager()`` is true (the consumer of batches is idle, say) any waiting group is ready: nobody
        gains from the wait. Blocks until a batch is ready; None after ``timeout`` seconds or once closed.
        Call :meth:`poke` when ``eager()`` may have changed.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                now = self._clock()
                ready, wake_at = self._ready(now, eager())
                if ready is not None:
                    return ready, self._take(ready)
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wake_at = min(wake_at, deadline)
                self._cond.wait(None if wake_at == float("inf") else max(0.0, wake_at - now))
            return None

    def poke(self) -> None:
        """Make waiting :meth:`get` calls look again (``eager`` may have changed)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> list[T]:
        """Stop handing out batches and return the items still waiting."""
        with self._cond:
            self._closed = True
            left = [item for group in self._groups.values() for _, item in group]
            self._groups.clear()
            self._cond.notify_all()
            return left

    def _ready(self, now: float, eager: bool) -> tuple[Hashable | None, float]:
        """The most urgent ready key (or None) and when the next group becomes ready."""
        best, best_since, wake_at = None, float("inf"), float("inf")
        for key, group in self._groups.items():
            max_items, max_wait = self._limits(key)
            since = group[0][0]
            if eager or len(group) >= max_items or now - since >= max_wait:
                if since < best_since:
                    best, best_since = key, since
            else:
                wake_at = min(wake_at, since + max_wait)
        return best, wake_at

    def _take(self, key: Hashable) -> list[T]:
        group = self._groups[key]
        max_items, _ = self._limits(key)
        batch = [group.popleft()[1] for _ in range(min(max_items, len(group)))]
        if not group:
            del self._groups[key]
        return batch
