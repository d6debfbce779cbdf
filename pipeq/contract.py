"""The job contract: one versioned pydantic model, validated by producers before sending and by workers on receipt.

On the wire a job is JSON (never pickle). Its input is exactly one of:

* ``{"kind": "text", "text": "..."}``                     text inline
* ``{"kind": "s3", "uri": "s3://bucket/key", "version_id": null}``   an object in object storage
* ``{"kind": "inline", "data": "<base64>"}``              small media bytes inline
* ``{"kind": "dict", "value": {...}}``                    several inputs for one call (e.g. text + text_pair)

A chat for text-generation is the dict input ``{"messages": [{"role": "user", "content": "..."}, ...]}``.
"""

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from config.settings import Limits
from config.tasks import task_spec

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
S3_URI_PATTERN = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,62})/(?P<key>.+)$")


class InvalidJob(ValueError):
    """A job that breaks the contract: refused before it is enqueued, or failed on receipt."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextInput(_Frozen):
    """Text carried in the job itself."""

    kind: Literal["text"] = "text"
    text: str


class ObjectInput(_Frozen):
    """An object in object storage, fetched by the worker."""

    kind: Literal["s3"] = "s3"
    uri: str
    version_id: str | None = None

    @field_validator("uri")
    @classmethod
    def _s3_uri(cls, uri: str) -> str:
        if not S3_URI_PATTERN.match(uri):
            raise ValueError(f"{uri!r} is not an object reference of the form s3://bucket/key")
        return uri

    @property
    def bucket(self) -> str:
        return S3_URI_PATTERN.match(self.uri)["bucket"]

    @property
    def key(self) -> str:
        return S3_URI_PATTERN.match(self.uri)["key"]


class InlineInput(_Frozen):
    """Small media bytes carried in the job, base64 on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    kind: Literal["inline"] = "inline"
    data: bytes


class DictInput(_Frozen):
    """Several named inputs for one pipeline call, e.g. ``{"text": ..., "text_pair": ...}``."""

    kind: Literal["dict"] = "dict"
    value: dict[str, JsonValue]


JobInput = Annotated[TextInput | ObjectInput | InlineInput | DictInput, Field(discriminator="kind")]


class Job(_Frozen):
    """One inference job, version 1 of the contract."""

    v: Literal[1] = 1
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    task: str
    model: str
    input: JobInput
    parameters: dict[str, JsonValue] = {}
    webhook: str | None = None
    submitted_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("id")
    @classmethod
    def _job_id(cls, job_id: str) -> str:
        if not JOB_ID_PATTERN.match(job_id):
            raise ValueError(
                f"job id {job_id!r} must be 1-128 characters of letters, digits and ._:@- "
                "(a UUID or your own idempotency key)"
            )
        return job_id

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^\s/]+", url):
            raise ValueError(f"webhook {url!r} must be an http:// or https:// URL")
        return url

    def check(self, limits: Limits) -> "Job":
        """Raise InvalidJob unless the task, its parameters and the input suit each other and ``limits``."""
        try:
            spec = task_spec(self.task)
            spec.check_parameters(self.parameters)
        except ValueError as exc:
            raise InvalidJob(str(exc)) from None
        item = self.input
        if isinstance(item, TextInput):
            if spec.modality != "text":
                raise InvalidJob(
                    f"{self.task} takes {spec.modality}, not text: pass an s3://bucket/key reference or inline bytes"
                )
            if len(item.text) > limits.max_text_chars:
                raise InvalidJob(f"text of {len(item.text)} characters exceeds the limit of {limits.max_text_chars}")
        elif isinstance(item, InlineInput) and len(item.data) > limits.max_inline_bytes:
            raise InvalidJob(
                f"inline input of {len(item.data)} bytes exceeds the limit of {limits.max_inline_bytes}: "
                "upload it to object storage and pass its s3:// reference instead"
            )
        elif isinstance(item, DictInput):
            allowed = spec.dict_input_keys
            if not allowed:
                raise InvalidJob(f"{self.task} takes no dict input")
            extra = sorted(set(item.value) - allowed)
            if extra:
                raise InvalidJob(
                    f"dict input key(s) {', '.join(extra)} not accepted by {self.task}; "
                    f"accepted: {', '.join(sorted(allowed))}"
                )
            if "messages" in allowed:
                _check_chat(item.value, limits)
        return self


def chat_messages(value: dict) -> list[dict]:
    """The messages of a chat input ``{"messages": [{"role": str, "content": ...}, ...]}``; InvalidJob if malformed."""
    messages = value.get("messages")
    if set(value) != {"messages"} or not isinstance(messages, list) or not messages:
        raise InvalidJob('a chat input is {"messages": [{"role": ..., "content": ...}, ...]}, at least one message')
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise InvalidJob(f"each chat message needs a role (string) and a content, not {message!r}")
    return messages


def chat_size(messages: list[dict]) -> int:
    """Characters of a chat's contents, the measure held against ``max_text_chars``."""
    return sum(len(str(message["content"])) for message in messages)


def _check_chat(value: dict, limits: Limits) -> None:
    """A chat input is well formed and within the text limit."""
    size = chat_size(chat_messages(value))
    if size > limits.max_text_chars:
        raise InvalidJob(f"chat of {size} characters exceeds the limit of {limits.max_text_chars}")


def make_input(value: Any) -> TextInput | ObjectInput | InlineInput | DictInput:
    """The contract's input for a Python value: ``"s3://..."`` references an object, other strings are text,
    bytes go inline, dicts carry several inputs; input models pass through."""
    if isinstance(value, TextInput | ObjectInput | InlineInput | DictInput):
        return value
    if isinstance(value, str):
        return ObjectInput(uri=value) if value.startswith("s3://") else TextInput(text=value)
    if isinstance(value, bytes | bytearray | memoryview):
        return InlineInput(data=bytes(value))
    if isinstance(value, dict):
        return DictInput(value=value)
    raise InvalidJob(f"an input must be text, an s3:// reference, bytes or a dict, not {type(value).__name__}")
