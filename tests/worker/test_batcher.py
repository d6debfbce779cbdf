"""The micro-batcher alone, with a plain clock: sizes, flush intervals, groups, closing, priorities."""

import threading

from pipeq.worker.batcher import BATCHES_PER_LEVEL, MicroBatcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(limits: dict) -> tuple[MicroBatcher, Clock]:
    clock = Clock()
    return MicroBatcher(lambda key: limits[key], clock=clock), clock


def test_a_full_group_is_handed_out_at_once_up_to_its_max():
    batcher, _ = make({"a": (3, 10.0)})
    for item in range(5):
        batcher.put("a", item)
    assert batcher.get(timeout=0) == ("a", [0, 1, 2])
    assert batcher.get(timeout=0) is None  # 2 left, neither full nor old enough
    assert len(batcher) == 2


def test_a_partial_group_waits_for_its_flush_interval():
    batcher, clock = make({"a": (10, 0.5)})
    batcher.put("a", "x")
    assert batcher.get(timeout=0) is None
    clock.now = 0.5
    assert batcher.get(timeout=0) == ("a", ["x"])


def test_groups_never_mix_and_the_oldest_ready_group_goes_first():
    batcher, clock = make({"a": (10, 1.0), "b": (10, 1.0)})
    batcher.put("b", "b1")
    clock.now = 0.1
    batcher.put("a", "a1")
    batcher.put("b", "b2")
    clock.now = 2.0
    assert batcher.get(timeout=0) == ("b", ["b1", "b2"])
    assert batcher.get(timeout=0) == ("a", ["a1"])


def test_get_blocks_until_an_item_arrives_from_another_thread():
    batcher = MicroBatcher(lambda key: (1, 0.0))
    threading.Timer(0.05, batcher.put, ("a", 1)).start()
    assert batcher.get(timeout=5) == ("a", [1])


def test_close_releases_waiters_and_returns_what_is_left():
    batcher = MicroBatcher(lambda key: (10, 60.0))
    batcher.put("a", 1)
    batcher.put("b", 2)
    result: list = []
    waiter = threading.Thread(target=lambda: result.append(batcher.get()))
    waiter.start()
    assert sorted(batcher.close()) == [1, 2]
    waiter.join(5)
    assert result == [None]


def test_while_eager_any_waiting_group_is_ready():
    batcher, _ = make({"a": (10, 60.0)})
    batcher.put("a", 1)
    assert batcher.get(timeout=0) is None
    assert batcher.get(timeout=0, eager=lambda: True) == ("a", [1])


def test_a_poke_makes_a_waiting_get_look_again():
    batcher = MicroBatcher(lambda key: (10, 60.0))
    batcher.put("a", 1)
    idle = threading.Event()
    threading.Timer(0.05, lambda: (idle.set(), batcher.poke())).start()
    assert batcher.get(timeout=5, eager=idle.is_set) == ("a", [1])


LOW, NORMAL, HIGH = range(3)


def test_a_batch_takes_the_most_urgent_items_first_then_the_oldest():
    batcher, _ = make({"a": (3, 10.0)})
    for item, priority in [("n1", NORMAL), ("l1", LOW), ("n2", NORMAL), ("h1", HIGH), ("l2", LOW), ("h2", HIGH)]:
        batcher.put("a", item, priority=priority)
    assert batcher.get(timeout=0) == ("a", ["h1", "h2", "n1"])
    assert batcher.get(timeout=0) == ("a", ["n2", "l1", "l2"])


def test_among_ready_groups_the_most_urgent_goes_first_then_the_oldest():
    batcher, clock = make({"a": (10, 1.0), "b": (10, 1.0), "c": (10, 1.0)})
    batcher.put("a", "a-normal", priority=NORMAL)
    clock.now = 0.1
    batcher.put("b", "b-low", priority=LOW)
    batcher.put("b", "b-high", priority=HIGH)
    clock.now = 0.2
    batcher.put("c", "c-high", priority=HIGH)
    clock.now = 2.0
    assert batcher.get(timeout=0) == ("b", ["b-high", "b-low"])  # as urgent as c, and older
    assert batcher.get(timeout=0) == ("c", ["c-high"])
    assert batcher.get(timeout=0) == ("a", ["a-normal"])


def test_urgency_does_not_make_a_group_ready_sooner():
    batcher, clock = make({"a": (10, 1.0), "b": (10, 1.0)})
    batcher.put("a", "a-low", priority=LOW)
    clock.now = 0.5
    batcher.put("b", "b-high", priority=HIGH)
    clock.now = 1.0
    assert batcher.get(timeout=0) == ("a", ["a-low"])  # b has not waited its limit yet
    assert batcher.get(timeout=0) is None


def test_a_low_item_is_not_starved_by_high_items_that_keep_coming():
    batcher, _ = make({"a": (2, 10.0)})
    batcher.put("a", "low", priority=LOW)
    taken = []
    for n in range(4 * BATCHES_PER_LEVEL):
        batcher.put("a", f"high {n}", priority=HIGH)
        batcher.put("a", f"high {n}b", priority=HIGH)
        taken += batcher.get(timeout=0)[1]
        if "low" in taken:
            break
    # Two levels below high: it ranks with a fresh high item once 2 * BATCHES_PER_LEVEL batches went before it,
    # and goes first among equals, being older.
    assert "low" in taken
    assert len(taken) == 2 * (2 * BATCHES_PER_LEVEL + 1)
