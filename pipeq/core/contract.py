"""The job contract: one versioned pydantic model, validated by producers before sending and by workers on receipt.

On the wire a job is JSON (never pickle). Its input is exactly one of:

* ``{"kind": "text", "text": "..."}``                     text inline
* ``{"kind": "s3", "uri": "s3://bucket/key", "version_id": null}``   an object in object storage
* ``{"kind": "inline", "data": "<base64>"}``              small media bytes inline
* ``{"kind": "dict", "value": {...}}``                    several inputs for one call (e.g. text + text_pair)

A chat for text-generation is the dict input ``{"messages": [{"role": "user", "content": "..."}, ...]}``.

Dict inputs may carry media by reference: anywhere inside them, ``{"kind": "s3", "uri": ...}`` or ``{"kind":
"inline", "data": "<base64>"}`` stands for an object the worker fetches and decodes (e.g. ``{"images":
{"kind": "s3", "uri": "s3://bucket/cat.png"}, "text": "What is this?"}``). For convenience an ``"s3://..."``
string under a media key (``image(s)``, ``audio(s)``, ``video(s)``, ``url``, ``path``) is such a reference,
and bytes given to the Python client become inline references.
"""

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from pipeq.config.object_prefixes import ObjectAccess
from pipeq.config.settings import Limits
from pipeq.config.tasks import canonical_task, task_spec

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


MEDIA_KEYS = frozenset({"image", "images", "audio", "audios", "video", "videos", "url", "path"})
"""Keys under which a dict input's ``"s3://..."`` strings are media references."""

MediaReference = ObjectInput | InlineInput


def _as_reference(node: Any) -> MediaReference | None:
    """The media reference a JSON node stands for, or None; ValueError if it is a malformed one."""
    if not isinstance(node, dict) or node.get("kind") not in ("s3", "inline"):
        return None
    if node["kind"] == "s3":
        return ObjectInput.model_validate(node)
    if set(node) != {"kind", "data"} or not isinstance(node["data"], str):
        raise ValueError('an inline media reference is {"kind": "inline", "data": "<base64>"}')
    try:
        return InlineInput(data=base64.b64decode(node["data"], validate=True))
    except binascii.Error:
        raise ValueError("an inline media reference's data is not valid base64") from None


def replace_media(value: Any, replace: Callable[[MediaReference], Any]) -> Any:
    """A copy of the JSON ``value`` with every media reference in it replaced by ``replace(reference)``."""
    reference = _as_reference(value)
    if reference is not None:
        return replace(reference)
    if isinstance(value, dict):
        return {key: replace_media(item, replace) for key, item in value.items()}
    if isinstance(value, list):
        return [replace_media(item, replace) for item in value]
    return value


def media_references(value: Any) -> list[MediaReference]:
    """Every media reference inside the JSON ``value``, in document order."""
    found: list[MediaReference] = []
    replace_media(value, found.append)
    return found


def _to_references(value: Any, key: str | None = None) -> Any:
    """Bytes become inline references and ``s3://`` strings under media keys become object references."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"kind": "inline", "data": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, str) and key in MEDIA_KEYS and value.startswith("s3://"):
        return {"kind": "s3", "uri": value}
    if isinstance(value, dict) and _as_reference(value) is None:
        return {name: _to_references(item, name) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_references(item, key) for item in value]
    return value


class DictInput(_Frozen):
    """Several named inputs for one pipeline call, e.g. ``{"text": ..., "text_pair": ...}``, media by reference."""

    kind: Literal["dict"] = "dict"
    value: dict[str, JsonValue]

    @field_validator("value", mode="before")
    @classmethod
    def _references(cls, value: Any) -> Any:
        value = _to_references(value) if isinstance(value, dict) else value
        media_references(value)  # raises on a malformed reference
        return value

    def inline_bytes(self) -> int:
        """Bytes of the inline media inside."""
        return sum(len(ref.data) for ref in media_references(self.value) if isinstance(ref, InlineInput))


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

    @field_validator("task")
    @classmethod
    def _task_name(cls, task: str) -> str:
        return canonical_task(task)

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
            _check_dict(spec, item, limits)
        elif spec.modality == "dict":
            raise InvalidJob(f"{self.task} takes a dict input with {_keys(spec)}")
        return self


def _keys(spec: Any) -> str:
    required = spec.required_input_keys or spec.dict_input_keys
    return "the key(s) " + ", ".join(sorted(required))


def _check_dict(spec: Any, item: DictInput, limits: Limits) -> None:
    """A dict input has only keys ``spec`` accepts, those it needs, inline media within limits, sane chats."""
    allowed = spec.dict_input_keys
    if not allowed:
        raise InvalidJob(f"{spec.name} takes no dict input")
    extra = sorted(set(item.value) - allowed)
    if extra:
        raise InvalidJob(
            f"dict input key(s) {', '.join(extra)} not accepted by {spec.name}; accepted: {', '.join(sorted(allowed))}"
        )
    if "messages" in item.value:
        _check_chat(item.value, limits)
    else:
        missing = sorted(spec.required_input_keys - set(item.value))
        if missing:
            raise InvalidJob(f"{spec.name} needs the dict input key(s) {', '.join(missing)}")
    inline = item.inline_bytes()
    if inline > limits.max_inline_bytes:
        raise InvalidJob(
            f"inline media of {inline} bytes exceeds the limit of {limits.max_inline_bytes}: "
            "upload it to object storage and reference it as s3://bucket/key instead"
        )


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
    """Characters of a chat's text, the measure held against ``max_text_chars``; media parts count for nothing."""
    return sum(_text_size(message["content"]) for message in messages)


def _text_size(content: Any) -> int:
    """Characters of a message's content: a string, or a list of parts like ``{"type": "text", "text": ...}``."""
    if isinstance(content, list):
        return sum(len(str(part.get("text", ""))) if isinstance(part, dict) else len(str(part)) for part in content)
    return len(str(content))


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


def object_inputs(item: JobInput) -> list[ObjectInput]:
    """Every object a job's input references: the input itself, or the object references inside a dict input."""
    if isinstance(item, ObjectInput):
        return [item]
    if isinstance(item, DictInput):
        return [ref for ref in media_references(item.value) if isinstance(ref, ObjectInput)]
    return []


def check_object_access(job: Job, access: ObjectAccess) -> Job:
    """Raise InvalidJob unless every object the job references is one ``access`` lets it read (producers check
    at submission; workers check again before fetching, failing such jobs as if the object were missing)."""
    for ref in object_inputs(job.input):
        refusal = access.refusal(ref.bucket, ref.key)
        if refusal:
            raise InvalidJob(refusal)
    return job


PAYLOAD_FIELDS = frozenset({"v", "task", "model", "input", "parameters", "webhook"})
"""What makes two submissions of a job id the same job (its submission time does not)."""


def payload_sha256(job: Job) -> str:
    """The SHA-256 of the job's payload as canonical JSON: equal for resubmissions of the same job (key order,
    ``"s3://"`` shorthands and defaults left out do not matter), different when anything in PAYLOAD_FIELDS is."""
    payload = job.model_dump(mode="json", include=PAYLOAD_FIELDS)
    if isinstance(job.input, DictInput):
        payload["input"]["value"] = replace_media(job.input.value, lambda ref: ref.model_dump(mode="json"))
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
