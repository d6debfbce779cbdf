"""The listing index: entries written with records, exact order and resumption, trimming, strict signed cursors."""

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis

from pipeq.core import job_index
from pipeq.core.contract import InvalidJob
from pipeq.core.job_index import ALL_KEY, HIGHEST, LOWEST, JobIndex, Position, model_key
from pipeq.core.records import JobRecord, RecordStore, now

TTL = 3600


@pytest.fixture
def store(redis_url, redis_db):
    store = RecordStore(f"{redis_url}/{redis_db + 1}", ttl=TTL)
    yield store
    store.redis.close()


def record(job_id: str, at: datetime, model: str = "m") -> JobRecord:
    return JobRecord(state="queued", id=job_id, task="text-classification", model=model, submitted_at=at)


def walk(index: JobIndex, key: str, count: int, low: int = LOWEST, high: int = HIGHEST) -> list[str]:
    """Every id of ``key``, a page of ``count`` at a time, each page resumed from the previous one's cursor."""
    seen: list[str] = []
    after = None
    while entries := index.entries(key, low, high, after, count):
        seen += [entry.job_id for entry in entries]
        after = index.position(index.cursor(entries[-1]))
    return seen


def test_the_score_is_exact_whole_microseconds():
    at = datetime(2026, 12, 1, 10, 0, 0, 123457, tzinfo=UTC)
    assert job_index.score(at) == 1_796_119_200_123_457
    assert job_index.score(at + timedelta(microseconds=1)) - job_index.score(at) == 1
    assert job_index.score(at.astimezone(timezone(timedelta(hours=2)))) == job_index.score(at)  # the same instant


def test_creating_records_lists_them_once_in_both_sets(store):
    at = now()
    assert store.create([record("a", at), record("b", at + timedelta(seconds=1), model="other")]) == [None, None]
    assert store.redis.zscore(ALL_KEY, "a") == job_index.score(at)
    assert store.redis.zrange(model_key("m"), 0, -1) == [b"a"]
    assert store.redis.zrange(model_key("other"), 0, -1) == [b"b"]
    # Resubmitting the id later neither moves its entry nor adds one.
    assert store.create([record("a", at + timedelta(seconds=30))])[0] is not None
    assert store.redis.zscore(ALL_KEY, "a") == job_index.score(at)
    assert store.redis.zcard(ALL_KEY) == 2
    store.forget(["a"], ["m"])
    assert (store.redis.zscore(ALL_KEY, "a"), store.redis.zscore(model_key("m"), "a")) == (None, None)


def test_entries_older_than_the_ttl_are_trimmed_on_writes_and_the_sets_expire(store):
    old = now() - timedelta(seconds=TTL + 60)
    store.redis.zadd(ALL_KEY, {"stale": job_index.score(old)})
    store.redis.zadd(model_key("m"), {"stale": job_index.score(old)})
    store.create([record("ancient", old), record("fresh", now())])
    assert store.redis.zrange(ALL_KEY, 0, -1) == [b"fresh"]
    assert store.redis.zrange(model_key("m"), 0, -1) == [b"fresh"]
    for key in (ALL_KEY, model_key("m")):
        assert 0 < store.redis.ttl(key) <= TTL


def test_pages_are_newest_first_and_jobs_of_one_microsecond_go_by_id(store):
    at = now()
    tied = [record(f"tie-{i}", at) for i in (3, 1, 4, 0, 2)]
    store.create([record("older", at - timedelta(seconds=1)), *tied, record("newer", at + timedelta(seconds=1))])
    index = JobIndex(store.redis)
    expected = ["newer", "tie-4", "tie-3", "tie-2", "tie-1", "tie-0", "older"]
    for count in (1, 2, 3, 7, 50):
        assert walk(index, ALL_KEY, count) == expected


def test_a_walk_neither_repeats_nor_skips_while_jobs_arrive_and_leave(store):
    at = now() - timedelta(minutes=10)
    store.create([record(f"job-{i:02}", at + timedelta(seconds=i // 3)) for i in range(30)])  # ties of three
    index = JobIndex(store.redis)
    seen: list[str] = []
    after = None
    step = 0
    while entries := index.entries(ALL_KEY, LOWEST, HIGHEST, after, 4):
        seen += [entry.job_id for entry in entries]
        after = index.position(index.cursor(entries[-1]))
        store.create([record(f"new-{step}", now())])  # newer than every page so far: never shows up
        store.redis.zrem(ALL_KEY, entries[-1].job_id)  # the cursor's own entry leaves
        step += 1
    assert seen == sorted((f"job-{i:02}" for i in range(30)), reverse=True)


def test_time_bounds_are_inclusive(store):
    at = now()
    store.create([record(f"s{i}", at + timedelta(seconds=i)) for i in range(5)])
    index = JobIndex(store.redis)
    low, high = job_index.score(at + timedelta(seconds=1)), job_index.score(at + timedelta(seconds=3))
    assert walk(index, ALL_KEY, 2, low, high) == ["s3", "s2", "s1"]
    beyond = Position(job_index.score(at + timedelta(days=1)), "zzz")  # a cursor past ``high`` starts at it
    assert [e.job_id for e in index.entries(ALL_KEY, low, high, beyond, 10)] == ["s3", "s2", "s1"]
    below = Position(low - 1, "zzz")
    assert index.entries(ALL_KEY, low, high, below, 10) == []


def test_a_cursor_reads_back_and_is_opaque(store):
    index = JobIndex(store.redis)
    position = Position(1_796_119_200_123_457, "order:42@shop.example")
    cursor = index.cursor(position)
    assert "order" not in cursor and ":" not in cursor
    assert index.position(cursor) == position
    assert JobIndex(store.redis).position(cursor) == position  # the key lives in Redis: any client reads it


def _signed(index: JobIndex, text: str) -> str:
    """A cursor for arbitrary ``text``, correctly signed: only strict parsing stands between it and Redis."""
    encoded = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    return f"{encoded}.{index._sign(encoded)}"


@pytest.mark.parametrize(
    "make",
    [
        lambda index, good: good[:-1] + ("0" if good[-1] != "0" else "1"),  # signature edited
        lambda index, good: "A" + good[1:],  # payload edited
        lambda index, good: good.split(".")[0],  # no signature
        lambda index, good: good + "." + good,
        lambda index, good: good[:10],
        lambda index, good: "",
        lambda index, good: good + "\n",
        lambda index, good: "x" * 5000,
        lambda index, good: "*\r\nFLUSHALL\r\n",
        lambda index, good: None,
        lambda index, good: 12345,
        lambda index, good: good.encode(),
        lambda index, good: ["a"],
        lambda index, good: _signed(index, "12:has space"),
        lambda index, good: _signed(index, "12:job\nFLUSHALL"),
        lambda index, good: _signed(index, "twelve:job"),
        lambda index, good: _signed(index, "1e3:job"),
        lambda index, good: _signed(index, "123456789012345678:job"),
        lambda index, good: _signed(index, "12:"),
        lambda index, good: _signed(index, "12"),
        lambda index, good: _signed(index, "12:" + "a" * 129),
        lambda index, good: _signed(index, "12:-starts-with-a-dash"),
    ],
)
def test_a_damaged_or_forged_cursor_is_refused(store, make):
    index = JobIndex(store.redis)
    good = index.cursor(Position(1_796_119_200_123_457, "job-1"))
    with pytest.raises(InvalidJob, match="not one pipeq gave out"):
        index.position(make(index, good))


def test_a_cursor_signed_under_another_key_is_refused(store, redis_url, redis_databases):
    other_db = redis_databases.take()
    try:
        with redis.Redis.from_url(f"{redis_url}/{other_db + 1}") as other:
            foreign = JobIndex(other).cursor(Position(1, "job-1"))
        with pytest.raises(InvalidJob, match="not one pipeq gave out"):
            JobIndex(store.redis).position(foreign)
    finally:
        redis_databases.give_back(other_db)
