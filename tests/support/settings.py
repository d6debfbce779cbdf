"""Settings for the test services: tiny models in the catalogue, a Redis database pair per use."""

from pathlib import Path

from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import IngestRule, Limits, Settings

BUCKET = "media"
MAX_MEDIA_BYTES = 2_000_000
RESULTS_BUCKET = "results"
MAX_INLINE_RESULT_BYTES = 20_000


def model_name(task: str) -> str:
    """The catalogue name of a task's tiny model."""
    return f"tiny-{task}"


def tiny_entry(name: str, path: Path, task: str) -> ModelEntry:
    """A catalogue entry for a tiny model, with micro-batches small and quick enough for tests."""
    return ModelEntry(name=name, id=str(path), task=task, max_batch_jobs=16, max_wait_s=0.05, pipeline_batch_size=8)


def make_settings(
    redis_url: str,
    s3_endpoint: str,
    models: dict[str, Path],
    db: int = 0,
    broker_url: str | None = None,
    **overrides,
) -> Settings:
    """Settings for the test services: broker in Redis db ``db`` (or at ``broker_url``: RabbitMQ), records in
    ``db + 1`` (take ``db`` from the ``redis_db`` fixture). Jobs may read objects in the test bucket and in the
    buckets ingest rules watch."""
    entries = [tiny_entry(model_name(task), path, task) for task, path in models.items()]
    # A Hub model that is not in the cache: with HF_HUB_OFFLINE=1 it cannot be loaded.
    entries.append(ModelEntry(name="not-cached", id="pipeq-tests/not-in-any-cache", task="text-classification"))
    overrides.setdefault("limits", Limits(max_media_bytes=MAX_MEDIA_BYTES))
    overrides.setdefault("results_bucket", RESULTS_BUCKET)
    overrides.setdefault("max_inline_result_bytes", MAX_INLINE_RESULT_BYTES)
    watched = [f"s3://{IngestRule.model_validate(rule).bucket}/" for rule in overrides.get("ingest", [])]
    overrides.setdefault("allowed_object_prefixes", list(dict.fromkeys([f"s3://{BUCKET}/", *watched])))
    return Settings(
        broker_url=broker_url or f"{redis_url}/{db}",
        result_backend=f"{redis_url}/{db + 1}",
        s3_endpoint_url=s3_endpoint,
        s3_region="us-east-1",
        models=entries,
        **overrides,
    )
