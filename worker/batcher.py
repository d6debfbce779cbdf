"""The micro-batcher: items wait per group key until the group is full or its oldest item waited long enough.

It knows nothing of tasks: a key's limits come from a function, items are opaque. Each item has a priority (an
int, higher is more urgent): a batch takes a group's most urgent items first, oldest first among equals, and
among ready groups the one holding the most urgent item goes first, the one with the oldest item among equals.
So that none waits forever, an item rises one level for every :data:`BATCHES_PER_LEVEL` batches handed out
(of any group) while it waits.
"""

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from itertools import count
from typing import Generic, TypeVar

T = TypeVar("T")
Limits = Callable[[Hashable], tuple[int, float]]
"""key -> (most items in one batch, seconds the oldest item may wait)"""
BATCHES_PER_LEVEL = 16
"""An item waiting while this many batches are handed out ranks one priority level higher."""


@dataclass(frozen=True)
class _Waiting(Generic[T]):
    rank: int  # priority * BATCHES_PER_LEVEL - batches handed out before it came: higher goes first
    order: int  # when it came, among all items: lower goes first among equal ranks
    since: float
    item: T


@dataclass
class _Group(Generic[T]):
    waiting: list[_Waiting[T]] = field(default_factory=list)  # in the order they came
    best: int = 0  # the highest rank waiting

    def add(self, entry: _Waiting[T]) -> None:
        self.best = entry.rank if not self.waiting else max(self.best, entry.rank)
        self.waiting.append(entry)

    def take(self, most: int) -> list[T]:
        """Up to ``most`` items, the highest ranks first."""
        taken = sorted(self.waiting, key=lambda entry: (-entry.rank, entry.order))[:most]
        orders = {entry.order for entry in taken}
        self.waiting = [entry for entry in self.waiting if entry.order not in orders]
        self.best = max((entry.rank for entry in self.waiting), default=0)
        return [entry.item for entry in taken]


class MicroBatcher(Generic[T]):
    """A thread-safe buffer handing out batches of items that share a key, most urgent first (module docstring)."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._groups: dict[Hashable, _Group[T]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._handed_out = 0
        self._order = count()

    def put(self, key: Hashable, item: T, priority: int = 0) -> None:
        """Add ``item`` to the group ``key``; a higher ``priority`` is more urgent."""
        with self._cond:
            rank = priority * BATCHES_PER_LEVEL - self._handed_out
            entry = _Waiting(rank, next(self._order), self._clock(), item)
            self._groups.setdefault(key, _Group()).add(entry)
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return sum(len(group.waiting) for group in self._groups.values())

    def get(
        self, timeout: float | None = None, eager: Callable[[], bool] = lambda: False
    ) -> tuple[Hashable, list[T]] | None:
        """The next ready batch, from a full group or one whose oldest item waited its limit; among ready groups,
        the one with the most urgent item, then the oldest.

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
            left = [entry.item for group in self._groups.values() for entry in group.waiting]
            self._groups.clear()
            self._cond.notify_all()
            return left

    def _ready(self, now: float, eager: bool) -> tuple[Hashable | None, float]:
        """The ready key to serve first (or None) and when the next group becomes ready."""
        best, best_rank, best_since, wake_at = None, 0, float("inf"), float("inf")
        for key, group in self._groups.items():
            max_items, max_wait = self._limits(key)
            since = group.waiting[0].since
            if eager or len(group.waiting) >= max_items or now - since >= max_wait:
                if best is None or (group.best, -since) > (best_rank, -best_since):
                    best, best_rank, best_since = key, group.best, since
            else:
                wake_at = min(wake_at, since + max_wait)
        return best, wake_at

    def _take(self, key: Hashable) -> list[T]:
        group = self._groups[key]
        max_items, _ = self._limits(key)
        batch = group.take(max_items)
        if not group.waiting:
            del self._groups[key]
        self._handed_out += 1
        return batch
