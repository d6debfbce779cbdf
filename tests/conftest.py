"""Shared fixtures: real redis-server and S3 server on loopback, tiny models on disk, a worker in a thread."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeq.local_services import isolate_environment, redis_server, s3_server

isolate_environment("testing")  # before transformers is imported

from config.catalogue import ModelEntry  # noqa: E402
from config.settings import Limits, Settings  # noqa: E402
from pipeq.storage import s3_client  # noqa: E402
from producer import Client  # noqa: E402
from tests.support.tiny_models import BUILDERS, EXTRA_MODELS  # noqa: E402

BUCKET = "media"
MAX_MEDIA_BYTES = 2_000_000
RESULTS_BUCKET = "results"
MAX_INLINE_RESULT_BYTES = 20_000


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as url:
        yield url


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random model per task, built once per session in Hub layout."""
    root = tmp_path_factory.mktemp("models")
    return {task: build(root / task) for task, build in BUILDERS.items()}


def model_name(task: str) -> str:
    return f"tiny-{task}"


def make_settings(redis_url: str, s3_endpoint: str, models: dict[str, Path], db: int = 0, **overrides) -> Settings:
    """Settings for the test services: broker in Redis db ``db``, records in ``db + 1``."""
    entries = [
        ModelEntry(name=model_name(task), id=str(path), task=task, max_batch=16, flush_interval=0.05, batch_size=8)
        for task, path in models.items()
    ]
    # A Hub model that is not in the cache: with HF_HUB_OFFLINE=1 it cannot be loaded.
    entries.append(ModelEntry(name="not-cached", id="pipeq-tests/not-in-any-cache", task="text-classification"))
    overrides.setdefault("limits", Limits(max_media_bytes=MAX_MEDIA_BYTES))
    overrides.setdefault("results_bucket", RESULTS_BUCKET)
    overrides.setdefault("max_inline_result_bytes", MAX_INLINE_RESULT_BYTES)
    return Settings(
        broker_url=f"{redis_url}/{db}",
        result_backend=f"{redis_url}/{db + 1}",
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        models=entries,
        **overrides,
    )


@pytest.fixture(scope="session")
def extra_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Further tiny models (a second model for a task), by catalogue name, built once per session."""
    root = tmp_path_factory.mktemp("extra-models")
    return {name: build(root / name) for name, (_, build) in EXTRA_MODELS.items()}


@pytest.fixture(scope="session")
def settings(redis_url: str, s3_endpoint: str, tiny_models: dict[str, Path], extra_models: dict[str, Path]) -> Settings:
    settings = make_settings(redis_url, s3_endpoint, tiny_models)
    extra = [
        ModelEntry(name=name, id=str(path), task=EXTRA_MODELS[name][0], max_batch=16, flush_interval=0.05, batch_size=8)
        for name, path in extra_models.items()
    ]
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


@pytest.fixture(scope="session")
def worker(settings: Settings, s3):
    """A real pipeq worker (Celery, solo pool, the micro-batching engine) running in a thread."""
    from celery.contrib.testing.worker import start_worker

    from worker.app import create_app

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
