"""The dead-letter store in a real Redis: entries in the order they failed, replaced, taken out once."""

import json

import pytest
import redis

from pipeq.webhooks.dead_letters import FAILED_KEY, FAILED_ORDER_KEY, DeadLetters


@pytest.fixture
def letters(redis_url, redis_db) -> DeadLetters:
    return DeadLetters(redis.Redis.from_url(f"{redis_url}/{redis_db + 1}"))


def test_entries_come_oldest_first_and_say_why(letters):
    assert letters.entries() == []
    first = letters.add("job-b", "https://hooks.example.com/b", 8, "https://hooks.example.com/b answered 500")
    letters.add("job-a", "https://hooks.example.com/a", 1, "refusing ... public addresses only")
    assert [entry["id"] for entry in letters.entries()] == ["job-b", "job-a"]
    assert letters.entries()[0] == first
    assert {key: first[key] for key in ("id", "url", "attempts", "last_error")} == {
        "id": "job-b",
        "url": "https://hooks.example.com/b",
        "attempts": 8,
        "last_error": "https://hooks.example.com/b answered 500",
    }
    assert first["failed_at"].endswith("+00:00")
    assert json.loads(letters.redis.hget(FAILED_KEY, "job-b")) == first


def test_a_job_that_fails_again_has_one_entry_moved_to_the_end(letters):
    letters.add("job-1", "https://hooks.example.com/1", 8, "first")
    letters.add("job-2", "https://hooks.example.com/2", 8, "other")
    letters.add("job-1", "https://hooks.example.com/1", 3, "second")
    assert [(entry["id"], entry["last_error"]) for entry in letters.entries()] == [
        ("job-2", "other"),
        ("job-1", "second"),
    ]


def test_take_removes_an_entry_once(letters):
    entry = letters.add("job-1", "https://hooks.example.com/1", 8, "gave up")
    assert letters.take("job-1") == entry
    assert letters.take("job-1") is None
    assert letters.entries() == []
    assert letters.redis.exists(FAILED_KEY, FAILED_ORDER_KEY) == 0
