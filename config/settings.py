"""pipeq settings: environment variables (``PIPEQ_*``) over an optional TOML file named by ``PIPEQ_CONFIG``."""

import base64
import binascii
import os
import warnings
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeq.config.api import Api
from pipeq.config.catalogue import Catalogue, DeprecatedSetting, ModelEntry
from pipeq.config.object_prefixes import SETTING, ObjectAccess, covers, normalise_prefix
from pipeq.config.tasks import task_spec


class Limits(BaseModel):
    """Sizes past which a job is refused (at submission) or failed (at the worker): encoded sizes, and the sizes
    media decode to, read from their headers before memory or disk is spent and held to while decoding."""

    model_config = ConfigDict(extra="forbid")

    max_media_bytes: PositiveInt = Field(default=200 * 1024 * 1024, description="largest object a job may reference")
    max_text_chars: PositiveInt = Field(
        default=200_000, description="longest text input; a dict input's strings (chats included) count together"
    )
    max_inline_bytes: PositiveInt = Field(default=256 * 1024, description="largest inline media of one job")
    max_media_references: PositiveInt = Field(default=16, description="most media references in one dict input")
    max_audio_seconds: PositiveFloat = Field(default=4 * 3600.0, description="longest audio, in seconds")
    min_sample_rate: PositiveInt = Field(
        default=4_000, description="lowest sampling rate of audio (resampling from a tiny rate multiplies its size)"
    )
    max_sample_rate: PositiveInt = Field(default=192_000, description="highest sampling rate of audio")
    max_image_pixels: PositiveInt = Field(default=50_000_000, description="largest image, in pixels (width x height)")
    max_frame_pixels: PositiveInt = Field(default=4096 * 2160, description="largest video frame, in pixels")
    max_video_frames: PositiveInt = Field(default=18_000, description="most frames of a video (10 minutes at 30 fps)")
    max_decoded_bytes_per_batch: PositiveInt = Field(
        default=2 * 1024**3,
        description="decoded media one micro-batch may hold in memory; jobs past it wait for the next micro-batch",
    )
    ocr_timeout_s: PositiveFloat = Field(
        default=30.0,
        description="longest one Tesseract OCR run may take, in seconds",
    )

    @model_validator(mode="after")
    def _sample_rates_in_order(self) -> "Limits":
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError(
                f"limits.min_sample_rate ({self.min_sample_rate}) is above limits.max_sample_rate "
                f"({self.max_sample_rate}): no audio could be read"
            )
        return self


WEBHOOK_SECRET_PREFIX = "whsec_"
MIN_WEBHOOK_SECRET_BYTES = 24
"""Standard Webhooks suggests keys of 24 to 64 random bytes."""


def webhook_signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret, ``whsec_`` + base64 of at least 24 bytes; ValueError otherwise.

    The message says what is wrong and how to make a valid secret, never the secret itself.
    """
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        problem = f"it does not start with {WEBHOOK_SECRET_PREFIX!r}"
    else:
        try:
            key = base64.b64decode(secret.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
        except binascii.Error:
            problem = f"what follows {WEBHOOK_SECRET_PREFIX!r} is not base64"
        else:
            if len(key) >= MIN_WEBHOOK_SECRET_BYTES:
                return key
            problem = f"its key is {len(key)} bytes"
    raise ValueError(
        f"the webhook secret is not a Standard Webhooks secret: {problem}. A secret is {WEBHOOK_SECRET_PREFIX!r}"
        f" followed by the base64 of at least {MIN_WEBHOOK_SECRET_BYTES} random bytes, so that any Standard"
        " Webhooks receiver can verify the signatures; `pipeq webhooks new-secret` prints one"
    )


class Webhooks(BaseModel):
    """How results are pushed to callers' webhook URLs (signed, retried, SSRF-safe)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a refused secret is never echoed

    secret: SecretStr | None = Field(
        default=None,
        description="signing secret, 'whsec_' + base64 of 24+ random bytes: `pipeq webhooks new-secret`",
    )
    unsigned: bool = Field(
        default=False,
        description="deliver without a webhook-signature while no secret is set (receivers cannot tell such"
        " deliveries from forgeries); without a secret and without this, nothing is delivered",
    )
    queue: str = "pipeq.webhooks"
    timeout: PositiveFloat = Field(
        default=10.0,
        description="seconds one attempt may take in all: resolving, connecting, sending, the status line and"
        " headers, reading the answer; the connection is closed when they are up",
    )
    max_attempts: PositiveInt = 8
    backoff: PositiveFloat = Field(default=1.0, description="first retry delay in seconds, doubled each time")
    max_backoff: PositiveFloat = 600.0
    max_response_bytes: PositiveInt = 64 * 1024
    allow_private: bool = Field(
        default=False,
        description="allow special-purpose targets: loopback, private, link-local, ... (tests, trusted networks)",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_redirects(cls, data: object) -> object:
        """``max_redirects`` is gone: webhooks follow no redirects (a 3xx fails the delivery)."""
        if isinstance(data, dict) and "max_redirects" in data:
            data = {key: value for key, value in data.items() if key != "max_redirects"}
            warnings.warn(
                "[webhooks] max_redirects is ignored and deprecated: webhooks follow no redirects (a 3xx fails the"
                " delivery, receivers must answer at the URL given); remove the setting",
                DeprecatedSetting,
                stacklevel=2,
            )
        return data

    @field_validator("secret")
    @classmethod
    def _standard_webhooks_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            webhook_signing_key(secret.get_secret_value())
        return secret


class IngestRule(BaseModel):
    """Objects landing in ``bucket`` under ``prefix`` and ending in ``suffix`` become jobs."""

    model_config = ConfigDict(extra="forbid")

    bucket: str
    prefix: str = ""
    suffix: str = ""
    task: str
    model: str | None = None
    parameters: dict = {}
    webhook: str | None = None

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        task_spec(task)
        return task

    def matches(self, bucket: str, key: str) -> bool:
        return bucket == self.bucket and key.startswith(self.prefix) and key.endswith(self.suffix)


class Metrics(BaseModel):
    """Where a long-running pipeq process (model worker, webhook worker, ingester, backlog exporter) serves its
    Prometheus metrics and health probes: ``/metrics``, ``/healthz`` (live), ``/readyz`` (ready)."""

    model_config = ConfigDict(extra="forbid")

    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="TCP port of the metrics and health endpoint; none: not served. `pipeq worker --devices` gives"
        " its N-th device child port + N",
    )
    host: str = Field(
        default="127.0.0.1",
        description="address the endpoint listens on; 0.0.0.0 for a scraper in another container or host",
    )


MIN_INGEST_ID_KEY_CHARS = 32
NEW_INGEST_ID_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
"""A command that prints a good ``ingest_id_key``."""


def _long_enough_id_key(key: SecretStr | None) -> SecretStr | None:
    """An ``ingest_id_key`` of at least 32 characters; the message says how to make one, never the key."""
    if key is not None and len(key.get_secret_value()) < MIN_INGEST_ID_KEY_CHARS:
        raise ValueError(
            f"ingest_id_key has {len(key.get_secret_value())} characters; it needs at least"
            f" {MIN_INGEST_ID_KEY_CHARS} random ones, so that no one can compute the ids of ingested jobs:"
            f" `{NEW_INGEST_ID_KEY}` prints one"
        )
    return key


class Settings(BaseSettings):
    """Everything producers and workers need to know; see ``config/pipeq.example.toml``."""

    model_config = SettingsConfigDict(
        env_prefix="PIPEQ_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,  # no secrets in errors
    )

    config: Path | None = Field(default=None, description="the TOML file these settings were read from")
    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str = "redis://127.0.0.1:6379/1"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    limits: Limits = Limits()
    allowed_object_prefixes: list[str] = Field(
        default=[],
        description="where jobs may read objects, s3://bucket/ or s3://bucket/folder/ (pipeq.config.object_prefixes);"
        " none: jobs may reference no object",
    )
    models: list[ModelEntry] = []
    result_ttl: PositiveInt = Field(default=7 * 24 * 3600, description="seconds job records are kept")
    visibility_timeout: PositiveInt | None = Field(
        default=None,
        description="seconds before the broker redelivers an unacked webhook delivery whose worker went silent"
        " (default: dead_after_s; a live webhook worker keeps what it holds alive, waiting retries included)",
    )
    dead_after_s: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="a model worker silent this long (it touches what it holds every dead_after_s / 6) is dead: the"
        " jobs it held go back to the queue for the others; a worker paused for less keeps them",
    )
    submit_replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Redis replicas that must hold a submit's jobs (records and messages; Redis WAIT) before it"
        " returns, and a job's final record before its worker acks it: with Sentinel, a failover then loses no"
        " accepted job; 0 returns (and acks) once the primary has them",
    )
    submit_replicas_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="how long a submit waits for submit_replicas; fewer in time and it raises NotReplicated",
    )
    max_attempts: PositiveInt = Field(
        default=3,
        description="times a job may start running (a worker killed while running it counts); the next delivery "
        "fails it with TooManyAttempts instead of running it again",
    )
    drain_timeout_s: PositiveFloat | None = Field(
        default=None,
        description="longest a worker takes to stop after SIGTERM: it finishes the micro-batch in hand, requeues the"
        " rest and exits (default: the slowest served model's expected_seconds + 15); set the grace period"
        " (compose stop_grace_period, Kubernetes terminationGracePeriodSeconds) above it",
    )
    fetch_concurrency: PositiveInt = 8
    pipeline_cache_bytes: PositiveInt | None = Field(
        default=None, description="bytes of models a worker keeps loaded; least recently used leave first"
    )
    device: str = Field(default="cpu", description="device the worker runs pipelines on: cpu or cuda:N")
    webhooks: Webhooks = Webhooks()
    metrics: Metrics = Metrics()
    api: Api = Api()
    results_bucket: str | None = Field(default=None, description="bucket for results too large for Redis")
    max_inline_result_bytes: PositiveInt = Field(
        default=256 * 1024, description="results larger than this (as JSON) go to results_bucket"
    )
    ingest: list[IngestRule] = []
    ingest_seen_retention_s: PositiveInt = Field(
        default=14 * 24 * 3600,
        description="how long ingestion remembers an object version it handled (one job per version): longer than"
        " any redelivery window (SQS keeps messages up to 14 days); polling skips objects last modified before it",
    )
    ingest_id_key: Annotated[SecretStr | None, AfterValidator(_long_enough_id_key)] = Field(
        default=None,
        description="keys the ids of ingested jobs (HMAC-SHA256) so no one can predict them: 32+ random characters,"
        " kept for good (a new key gives every object a new id); `pipeq ingest` needs it",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = getattr(init_settings, "init_kwargs", {}).get("config") or os.environ.get("PIPEQ_CONFIG")
        if not path:
            return init_settings, env_settings
        if not Path(path).is_file():
            raise FileNotFoundError(f"PIPEQ_CONFIG names {path}, which is not a file")
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=Path(path))

    @field_validator("allowed_object_prefixes")
    @classmethod
    def _object_prefixes(cls, prefixes: list[str]) -> list[str]:
        return [normalise_prefix(prefix) for prefix in prefixes]

    @model_validator(mode="after")
    def _objects_within_allowed_prefixes(self) -> "Settings":
        """Catalogue entries only narrow ``allowed_object_prefixes``; ingest rules only make jobs their model may
        run."""
        for entry in self.models:
            for prefix in entry.allowed_object_prefixes or []:
                if not covers(self.allowed_object_prefixes, prefix):
                    raise ValueError(
                        f"model {entry.name!r} allows {prefix}, which is outside {SETTING} ("
                        f"{', '.join(self.allowed_object_prefixes) or 'none'}): a model's {SETTING} only narrows"
                        f" the settings'; add {prefix} (or a prefix containing it) to {SETTING}"
                    )
        for rule in self.ingest:
            access = self.object_access(_ingest_model(self.models, rule))
            watched = f"s3://{rule.bucket}/{rule.prefix}"
            if not covers(access.prefixes, watched):
                folder = rule.prefix[: rule.prefix.rfind("/") + 1]
                raise ValueError(
                    f"the ingest rule watching {watched}* makes jobs on objects outside {access.setting} ("
                    f"{', '.join(access.prefixes) or 'none'}), which would fail: add s3://{rule.bucket}/{folder}"
                    f" to {access.setting}, or watch a folder inside it"
                )
        self.api.check(self)
        return self

    def object_access(self, entry: ModelEntry | None = None) -> ObjectAccess:
        """The prefixes ``entry``'s jobs may read objects under: its own ``allowed_object_prefixes`` if it sets
        them (they lie inside the settings'), else the settings'."""
        if entry is None or entry.allowed_object_prefixes is None:
            return ObjectAccess(tuple(self.allowed_object_prefixes))
        return ObjectAccess(tuple(entry.allowed_object_prefixes), f"{SETTING} of model {entry.name!r}")

    @cached_property
    def catalogue(self) -> Catalogue:
        """The model catalogue built from ``models``."""
        return Catalogue(self.models)

    def broker_visibility_timeout(self) -> float:
        """How long the broker waits before redelivering an unacked webhook delivery: ``visibility_timeout`` if set,
        else ``dead_after_s``, as for model queues. A live webhook worker keeps every delivery it holds alive, those
        waiting for their retry included (pipeq.webhooks.keepalive), so only a silent one loses them."""
        return self.visibility_timeout or self.dead_after_s


DRAIN_MARGIN_S = 15.0
"""What a drain takes beside the micro-batch in hand: settling its messages, closing the connections."""


def drain_timeout(settings: Settings, queues: list[str]) -> float:
    """Seconds a worker serving ``queues`` may take to drain after SIGTERM (see ``drain_timeout_s``)."""
    if settings.drain_timeout_s:
        return settings.drain_timeout_s
    served = settings.catalogue.for_queues(queues) or settings.models
    slowest = max((entry.expected_seconds for entry in served), default=60.0)
    return slowest + DRAIN_MARGIN_S


def _ingest_model(models: list[ModelEntry], rule: IngestRule) -> ModelEntry | None:
    """The catalogue entry an ingest rule's jobs run on; None where the catalogue cannot say (the ingester
    refuses those jobs itself)."""
    try:
        return Catalogue(models).resolve(rule.task, rule.model)
    except ValueError:
        return None


def load_settings(config: str | Path | None = None, **overrides: object) -> Settings:
    """Settings from ``config`` (or ``PIPEQ_CONFIG``), the environment and ``overrides``."""
    if config is not None:
        overrides["config"] = Path(config)
    return Settings(**overrides)
