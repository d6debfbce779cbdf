"""Settings of the backlog tests' own: a catalogue over three queues, in a Redis database pair of the test."""

from collections.abc import Iterator

import pytest
import redis

from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import Settings
from pipeq.producer import Client

UNLOADABLE = "pipeq-tests/not-in-any-cache"
"""No worker runs in these tests: the models are never loaded."""
MODELS = [
    ModelEntry(name="classify-cpu", id=UNLOADABLE, task="text-classification", queue="cpu", default=True),
    ModelEntry(name="classify-gpu", id=UNLOADABLE, task="text-classification", queue="gpu"),
    ModelEntry(name="fill", id=UNLOADABLE, task="fill-mask"),  # the default queue, pipeq
]
QUEUES = ["cpu", "gpu", "pipeq", "pipeq.webhooks"]
"""The catalogue's queues, then the webhooks queue: what the backlog shows by default."""


def backlog_settings(broker_url: str, result_backend: str, **overrides: object) -> Settings:
    """Settings with the three-queue catalogue and the given Redis databases."""
    return Settings(
        broker_url=broker_url, result_backend=result_backend, models=MODELS, s3_region="us-east-1", **overrides
    )


@pytest.fixture
def own_settings(redis_url: str, redis_db: int) -> Settings:
    return backlog_settings(f"{redis_url}/{redis_db}", f"{redis_url}/{redis_db + 1}")


@pytest.fixture
def broker(own_settings: Settings) -> Iterator[redis.Redis]:
    """A plain client of the test's broker database."""
    client = redis.Redis.from_url(own_settings.broker_url)
    yield client
    client.close()


@pytest.fixture
def producer(own_settings: Settings) -> Iterator[Client]:
    client = Client(own_settings)
    yield client
    client.close()
