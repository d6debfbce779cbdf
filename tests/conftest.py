"""Shared fixtures: real redis-server and S3 server on loopback, tiny models on disk, a worker in a thread."""

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.local_services import (
    SentinelGroup,
    isolate_environment,
    rabbitmq_server,
    redis_server,
    s3_server,
    sentinel_group,
)

isolate_environment("testing")  # before transformers is imported

import redis  # noqa: E402

from devtools.tiny_models import BUILDERS, EXTRA_MODELS  # noqa: E402
from pipeq.config.settings import Settings  # noqa: E402
from pipeq.core.storage import s3_client  # noqa: E402
from pipeq.producer import Client  # noqa: E402
from tests.support.settings import BUCKET, RESULTS_BUCKET, make_settings, tiny_entry  # noqa: E402


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A private RabbitMQ node (about 4 s to start), for tests of RabbitMQ as the broker."""
    with rabbitmq_server() as url:
        yield url


@pytest.fixture(scope="session")
def sentinel() -> Iterator[SentinelGroup]:
    """A Redis primary, its replica and three sentinels (started only for the tests that use them)."""
    with sentinel_group() as group:
        yield group


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random model per task, built once per session in Hub layout."""
    root = tmp_path_factory.mktemp("models")
    return {task: build(root / task) for task, build in BUILDERS.items()}


class RedisDatabases:
    """Redis database pairs (broker ``n``, records ``n + 1``) for tests and fixtures with settings of their own;
    the session's shared settings use 0 and 1. A pair is emptied when it is handed out."""

    def __init__(self, url: str, databases: int = 64) -> None:
        self.url = url
        self.free = list(range(2, databases, 2))

    def take(self) -> int:
        if not self.free:
            raise RuntimeError("every Redis database pair of the test redis-server is in use")
        db = self.free.pop(0)
        for index in (db, db + 1):
            with redis.Redis.from_url(f"{self.url}/{index}") as client:
                client.flushdb()
        return db

    def give_back(self, db: int) -> None:
        self.free.append(db)


@pytest.fixture(scope="session")
def redis_databases(redis_url: str) -> RedisDatabases:
    return RedisDatabases(redis_url)


@pytest.fixture(scope="module")
def new_redis_db(redis_databases: RedisDatabases) -> Iterator[Callable[[], int]]:
    """Hands out empty Redis database pairs (broker ``n``, records ``n + 1``) for the test module's fixtures;
    they are given back when the module ends."""
    taken: list[int] = []

    def new() -> int:
        taken.append(redis_databases.take())
        return taken[-1]

    yield new
    for db in taken:
        redis_databases.give_back(db)


@pytest.fixture
def redis_db(redis_databases: RedisDatabases) -> Iterator[int]:
    """An empty Redis database pair (broker ``n``, records ``n + 1``) of this test's own."""
    db = redis_databases.take()
    yield db
    redis_databases.give_back(db)


@pytest.fixture(scope="session")
def extra_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Further tiny models (a second model for a task), by catalogue name, built once per session."""
    root = tmp_path_factory.mktemp("extra-models")
    return {name: build(root / name) for name, (_, build) in EXTRA_MODELS.items()}


@pytest.fixture(scope="session")
def settings(redis_url: str, s3_endpoint: str, tiny_models: dict[str, Path], extra_models: dict[str, Path]) -> Settings:
    settings = make_settings(redis_url, s3_endpoint, tiny_models)
    extra = [tiny_entry(name, path, EXTRA_MODELS[name][0]) for name, path in extra_models.items()]
    return settings.model_copy(update={"models": [*settings.models, *extra]})


@pytest.fixture(scope="session")
def s3(settings: Settings):
    client = s3_client(settings)
    for bucket in (BUCKET, RESULTS_BUCKET):
        client.create_bucket(Bucket=bucket)
    return client


@pytest.fixture
def upload(s3):
    """Put bytes in the test bucket under a fresh key; returns the s3:// reference."""

    def put(data: bytes, suffix: str = "") -> str:
        key = f"{uuid.uuid4()}{suffix}"
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        return f"s3://{BUCKET}/{key}"

    return put


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``own_worker`` (a worker of their own in a thread) run first, before the session's worker
    starts: Celery's test worker stops by a process-wide flag that would end the session's worker too."""
    items.sort(key=lambda item: item.get_closest_marker("own_worker") is None)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def worker(settings: Settings, s3):
    """A real pipeq worker (Celery, solo pool, the micro-batching engine) running in a thread."""
    from celery.contrib.testing.worker import start_worker

    from pipeq.worker.app import create_app

    app = create_app(settings)
    with start_worker(app, perform_ping_check=False, queues=["pipeq"], shutdown_timeout=60, loglevel="WARNING"):
        yield app


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    client = Client(settings)
    yield client
    client.close()


@pytest.fixture(scope="session")
def reference(tiny_models: dict[str, Path]):
    """Plain in-process ``transformers.pipeline`` per task, on the same tiny models: the parity reference."""
    import transformers

    cache: dict[str, object] = {}

    def get(task: str):
        if task not in cache:
            cache[task] = transformers.pipeline(task, model=str(tiny_models[task]), device="cpu")
        return cache[task]

    return get
