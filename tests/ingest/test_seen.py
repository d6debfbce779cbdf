"""The seen memory: a version is remembered for at least the retention, at most a window longer, and expires."""

import time

import redis

from pipeq.ingest import seen as seen_module
from pipeq.ingest.seen import LEGACY_KEY, WINDOWS, SeenVersions


def test_a_version_is_remembered_for_the_retention_and_forgotten_after(redis_url, redis_db, monkeypatch):
    client = redis.Redis.from_url(f"{redis_url}/{redis_db + 1}")
    memory = SeenVersions(client, retention_s=14 * 24 * 3600)
    window = memory.window_s
    assert window == 24 * 3600
    clock = [1_800_000_000.0]
    monkeypatch.setattr(seen_module.time, "time", lambda: clock[0])
    assert memory.add("media/a.wav@1") is True and memory.add("media/a.wav@1") is False
    memory.mark(["media/b.wav@2"])
    for later in (0, window, memory.retention_s - 1, memory.retention_s):
        clock[0] = 1_800_000_000.0 + later
        assert memory.missing(["media/a.wav@1", "media/b.wav@2", "media/c.wav@3"]) == [False, False, True], later
    clock[0] = 1_800_000_000.0 + memory.retention_s + window
    assert memory.missing(["media/a.wav@1"]) == [True]  # out of every window looked at: a window later at most
    key = next(iter(client.scan_iter("pipeq:ingest:seen:*")))
    window_end = (int(1_800_000_000.0) // window + 1) * window
    assert client.expiretime(key) == window_end + memory.retention_s  # outlasts its last version by the retention


def test_a_short_retention_expires_for_real(redis_url, redis_db):
    client = redis.Redis.from_url(f"{redis_url}/{redis_db + 1}")
    memory = SeenVersions(client, retention_s=1)
    memory.add("media/a.wav@1")
    assert memory.missing(["media/a.wav@1"]) == [False]
    deadline = time.monotonic() + 10
    while client.dbsize() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.dbsize() == 0 and memory.missing(["media/a.wav@1"]) == [True]


def test_the_legacy_set_counts_and_is_given_a_lifetime(redis_url, redis_db):
    client = redis.Redis.from_url(f"{redis_url}/{redis_db + 1}")
    client.sadd(LEGACY_KEY, "media/old.wav@9")
    memory = SeenVersions(client, retention_s=3600)
    assert 0 < client.ttl(LEGACY_KEY) <= 3600
    assert memory.missing(["media/old.wav@9", "media/new.wav@1"]) == [False, True]
    assert memory.add("media/old.wav@9") is False
    assert len(memory._windows()[0]) == WINDOWS + 1  # the current window and the WINDOWS before it
