"""Settings of the HTTP API (``pipeq api``): where it listens, its bounds, its uploads and its tokens.

A token is stored as the SHA-256 of its secret, never the secret (``pipeq api new-token`` prints both). Each one is
scoped: the models or tasks it may submit to, the object prefixes its jobs may read (besides its own uploads), how
fast it may submit and how many of its jobs may wait at once. With no token configured the API is open, and it
refuses to listen anywhere but loopback.
"""

import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from pipeq.config.object_prefixes import covers, normalise_prefix
from pipeq.config.tasks import task_spec

if TYPE_CHECKING:
    from pipeq.config.settings import Settings

TOKEN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}\Z")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")
CONTENT_TYPE = re.compile(r"^[a-z]+/([a-z0-9][a-z0-9.+-]{0,63}|\*)\Z")


class ApiToken(BaseModel):
    """One API token: the hash of its secret, what it may submit, and how much."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="names the token in logs and owns its jobs: 1-32 of a-z, 0-9, '_' and '-'")
    sha256: str = Field(description="SHA-256 (hex) of the token's secret: `pipeq api new-token` prints it")
    models: list[str] | None = Field(default=None, description="catalogue models it may submit to (none: any)")
    tasks: list[str] | None = Field(default=None, description="tasks it may submit (none: any)")
    input_prefixes: list[str] = Field(
        default=[],
        description="s3:// prefixes its jobs may read objects under (inside allowed_object_prefixes), besides its"
        " own uploads",
    )
    jobs_per_s: PositiveFloat = Field(default=20.0, description="jobs it may submit per second, on average")
    burst: PositiveInt = Field(default=200, description="jobs it may submit at once, above the average rate")
    max_queued: PositiveInt = Field(default=10_000, description="most of its jobs not yet final at any time")
    requests_per_s: PositiveFloat = Field(default=50.0, description="requests of any kind per second, on average")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not TOKEN_NAME.match(name):
            raise ValueError(f"API token name {name[:40]!r} must be 1-32 of a-z, 0-9, '_' and '-', starting a-z/0-9")
        return name

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, digest: str) -> str:
        if not SHA256_HEX.match(digest):
            raise ValueError(
                "an API token's sha256 is 64 lowercase hex digits (the SHA-256 of its secret), never the secret"
                " itself: `pipeq api new-token` prints the line to paste"
            )
        return digest

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str] | None) -> list[str] | None:
        return None if tasks is None else [task_spec(task).name for task in tasks]

    @field_validator("input_prefixes")
    @classmethod
    def _prefixes(cls, prefixes: list[str]) -> list[str]:
        return [normalise_prefix(prefix) for prefix in prefixes]


class Api(BaseModel):
    """The HTTP API: where it listens, how much one request may ask, uploads, and the tokens it accepts."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="address to listen on; anything but loopback needs tokens")
    port: int = Field(default=8000, ge=1, le=65535)
    tokens: list[ApiToken] = []
    max_body_bytes: PositiveInt = Field(default=4 * 1024 * 1024, description="largest request body")
    max_jobs_per_request: PositiveInt = Field(default=1000, le=1000, description="most jobs one POST may submit")
    max_wait_s: PositiveFloat = Field(default=60.0, le=600, description="longest `Prefer: wait=N` a request may hold")
    max_streams: PositiveInt = Field(
        default=1000, description="requests one API process holds open at once (waits and event streams)"
    )
    max_streams_per_token: PositiveInt = Field(
        default=100, description="of those, most one token may hold open in one API process"
    )
    uploads_prefix: str | None = Field(
        default=None,
        description="s3:// folder presigned uploads go under (inside allowed_object_prefixes); none: no uploads",
    )
    uploads_endpoint_url: str | None = Field(
        default=None,
        description="the S3 endpoint uploaders reach, signed into upload URLs (default: s3_endpoint_url), where the"
        " API reaches object storage by another name (http://minio:9000 inside compose, http://127.0.0.1:9000 outside)",
    )
    max_upload_bytes: PositiveInt | None = Field(
        default=None, description="largest upload (default: limits.max_media_bytes)"
    )
    upload_expires_s: PositiveInt = Field(default=900, le=7 * 24 * 3600, description="how long an upload URL works")
    upload_content_types: list[str] = Field(
        default=["audio/*", "image/*", "video/*", "application/pdf", "text/plain"],
        description="content types uploads may have ('type/*': any subtype)",
    )

    @field_validator("uploads_prefix")
    @classmethod
    def _uploads_prefix(cls, prefix: str | None) -> str | None:
        return None if prefix is None else normalise_prefix(prefix)

    @field_validator("upload_content_types")
    @classmethod
    def _content_types(cls, types: list[str]) -> list[str]:
        for content_type in types:
            if not CONTENT_TYPE.match(content_type):
                raise ValueError(f"upload content type {content_type[:60]!r} is not type/subtype or type/*")
        return types

    @model_validator(mode="after")
    def _distinct_tokens(self) -> "Api":
        for attribute in ("name", "sha256"):
            values = [getattr(token, attribute) for token in self.tokens]
            if len(set(values)) != len(values):
                raise ValueError(f"two API tokens have the same {attribute}: give each token its own")
        return self

    def check(self, settings: "Settings") -> None:
        """ValueError unless the tokens and uploads fit the rest of ``settings``: known models, prefixes inside
        ``allowed_object_prefixes``."""
        allowed = settings.allowed_object_prefixes
        for token in self.tokens:
            unknown = [name for name in token.models or [] if name not in settings.catalogue.models]
            if unknown:
                raise ValueError(f"API token {token.name!r} names models outside the catalogue: {', '.join(unknown)}")
            outside = [prefix for prefix in token.input_prefixes if not covers(allowed, prefix)]
            if outside:
                raise ValueError(
                    f"API token {token.name!r} may read {', '.join(outside)}, outside allowed_object_prefixes"
                    f" ({', '.join(allowed) or 'none'}): a token only narrows them"
                )
        if self.uploads_prefix is not None and not covers(allowed, self.uploads_prefix):
            raise ValueError(
                f"api.uploads_prefix {self.uploads_prefix} is outside allowed_object_prefixes"
                f" ({', '.join(allowed) or 'none'}): jobs could not read what is uploaded; add it there"
            )
