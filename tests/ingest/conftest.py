"""Fixtures of the ingestion tests: a bucket, rules for it, and an ingester whose queued jobs can be read back."""

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from pipeq.config.settings import IngestRule, Settings
from pipeq.ingest.ingester import Ingester
from pipeq.producer import Client
from tests.support.s3_events import INGEST_ID_KEY
from tests.support.settings import make_settings


@pytest.fixture
def bucket_name() -> str:
    """A fresh bucket's name. A test that pins job ids (they are keyed hashes of the bucket, key and ETag) names its
    own bucket instead:
    ``@pytest.mark.parametrize("bucket_name", ["ingest-..."])``, a name no other test uses."""
    return f"ingest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bucket(s3, bucket_name: str) -> str:
    s3.create_bucket(Bucket=bucket_name)
    return bucket_name


@pytest.fixture
def rules(bucket: str) -> list[IngestRule]:
    """``reports/*.txt`` to the tiny text classifier; anything under ``notes/`` with top_k=2."""
    return [
        IngestRule(
            bucket=bucket,
            prefix="reports/",
            suffix=".txt",
            task="text-classification",
            model="tiny-text-classification",
        ),
        IngestRule(bucket=bucket, prefix="notes/", task="text-classification", parameters={"top_k": 2}),
    ]


@dataclass
class Offline:
    """An ingester whose jobs are queued where no worker takes them: jobs can be counted and read back."""

    settings: Settings
    client: Client
    ingester: Ingester
    broker: redis.Redis

    def queued(self) -> list[dict]:
        """The jobs waiting in the queue, oldest first."""
        jobs = []
        for raw in reversed(self.broker.lrange("pipeq", 0, -1)):
            message = json.loads(raw)
            body = message["body"]
            if message["properties"].get("body_encoding") == "base64":
                body = base64.b64decode(body)
            jobs.append(json.loads(body)[0][0])
        return jobs

    def records(self) -> int:
        """How many job records exist."""
        return len(self.client.store.redis.keys("pipeq:job:*"))


@pytest.fixture
def offline(redis_url, s3_endpoint, tiny_models, rules, redis_db) -> Iterator[Offline]:
    """An ingester with ``rules``, in a Redis database pair of its own that no worker consumes."""
    settings = make_settings(
        redis_url, s3_endpoint, tiny_models, db=redis_db, ingest=rules, ingest_id_key=INGEST_ID_KEY
    )
    client = Client(settings)
    broker = redis.Redis.from_url(settings.broker_url)
    yield Offline(settings, client, Ingester(settings, client), broker)
    client.close()
    broker.close()
