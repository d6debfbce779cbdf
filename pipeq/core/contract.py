"""The job contract: one versioned pydantic model, validated by producers before sending and by workers on receipt.

On the wire a job is JSON (never pickle). Its input is exactly one of:

* ``{"kind": "text", "text": "..."}``                     text inline
* ``{"kind": "s3", "uri": "s3://bucket/key", "version_id": null}``   an object in object storage
* ``{"kind": "inline", "data": "<base64>"}``              small media bytes inline
* ``{"kind": "dict", "value": {...}}``                    several inputs for one call (e.g. text + text_pair)

A chat for text-generation is the dict input ``{"messages": [{"role": "user", "content": "..."}, ...]}``.

Dict inputs may carry media by reference where pipelines read media: under a media key at their top
(``image(s)``, ``audio(s)``, ``video(s)``), in decision's ``assets`` and in a chat's media parts (``{"type":
"image", "image": ...}``; see CHAT_PART_KEYS). There ``{"kind": "s3", "uri": ...}`` or ``{"kind": "inline",
"data": "<base64>"}`` stands for an object the worker fetches and decodes (e.g. ``{"images": {"kind": "s3",
"uri": "s3://bucket/cat.png"}, "text": "What is this?"}``); for convenience an ``"s3://..."`` string there is
such a reference, and bytes given to the Python client become inline references. Any other string there (a URL,
a path) is refused: pipelines would download or open it themselves. Elsewhere strings are text.
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

from pipeq.config.catalogue import ModelEntry, ParameterCaps
from pipeq.config.object_prefixes import ObjectAccess
from pipeq.config.parameters import check_parameters
from pipeq.config.settings import Limits
from pipeq.config.tasks import canonical_task, task_spec

PRIORITIES = ("low", "normal", "high")
"""A job's priority levels, least urgent first. Within a queue, higher levels are fetched and batched first; the
transport's rule keeps lower levels from starving (pipeq.core.broker)."""
Priority = Literal["low", "normal", "high"]
WEBHOOK_EVENTS = ("started", "progress", "completed")
"""What a job's webhook may be told: it started running, its progress (throttled), it reached a final state."""
WebhookEvent = Literal["started", "progress", "completed"]
DEFAULT_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("completed",)

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}\Z")  # \Z: no trailing newline
S3_URI_PATTERN = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,62})/(?P<key>.+)\Z")


class InvalidJob(ValueError):
    """A job that breaks the contract: refused before it is enqueued, or failed on receipt. ``field`` names the part
    of the job at fault where known (``input``, ``parameters``, ``deadline``, ...)."""

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


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


MEDIA_KEYS = frozenset({"image", "images", "audio", "audios", "video", "videos", "url", "path", "image_url"})
"""Keys whose values are media, at the top of a dict input and in chat content parts (see check_media_positions)."""
ASSETS_KEY = "assets"
"""The key whose value names media, decision's ``{"assets": {"<img-1>": <media>, ...}}``."""

MediaReference = ObjectInput | InlineInput


def is_reference(node: Any) -> bool:
    """Whether the JSON ``node`` is a media reference, ``{"kind": "s3" | "inline", ...}``."""
    return isinstance(node, dict) and node.get("kind") in ("s3", "inline")


def _as_reference(node: Any) -> MediaReference | None:
    """The media reference a JSON node stands for, or None; ValueError if it is a malformed one."""
    if not is_reference(node):
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


def _inline(value: Any) -> Any:
    """``value`` with bytes anywhere in it as inline references."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"kind": "inline", "data": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict) and not is_reference(value):
        return {name: _inline(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_inline(item) for item in value]
    return value


def _as_media(value: Any) -> Any:
    """``value``, found where media goes, with its ``s3://`` strings as object references and bytes inline."""
    if isinstance(value, str) and value.startswith("s3://"):
        return {"kind": "s3", "uri": value}
    if isinstance(value, dict) and not is_reference(value):
        return {name: _as_media(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_media(item) for item in value]
    return _inline(value)


def _to_references(value: dict) -> dict:
    """Bytes become inline references; ``s3://`` strings where media goes (a media key at the top, an asset, a chat
    part's media key) become object references. Elsewhere strings are text."""
    converted: dict = {}
    for key, item in value.items():
        if key in MEDIA_KEYS:
            converted[key] = _as_media(item)
        elif key == ASSETS_KEY and isinstance(item, dict):
            converted[key] = {name: _as_media(asset) for name, asset in item.items()}
        elif key == "messages" and isinstance(item, list):
            converted[key] = [_message_references(message) for message in item]
        else:
            converted[key] = _inline(item)
    return converted


def _message_references(message: Any) -> Any:
    """A chat message with its content parts' media keys as references."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list | tuple):
        return _inline(message)
    parts = [
        {key: _as_media(item) if key in MEDIA_KEYS else _inline(item) for key, item in part.items()}
        if isinstance(part, dict)
        else _inline(part)
        for part in message["content"]
    ]
    return {key: parts if key == "content" else _inline(item) for key, item in message.items()}


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
    priority: Priority = "normal"
    deadline: datetime | None = None
    """A job not started by then is expired and never runs (checked when a worker claims it)."""
    webhook_events: tuple[WebhookEvent, ...] = DEFAULT_WEBHOOK_EVENTS
    result_ttl: int | None = Field(default=None, gt=0)
    """Seconds its record is kept, when shorter than the settings' ``result_ttl``."""

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, priority: Any) -> Any:
        if priority not in PRIORITIES:
            raise ValueError(f"priority {str(priority)[:40]!r} is not one of {', '.join(PRIORITIES)}")
        return priority

    @field_validator("webhook_events", mode="before")
    @classmethod
    def _webhook_events(cls, events: Any) -> Any:
        if isinstance(events, str) or not isinstance(events, list | tuple) or not events:
            raise ValueError(f"webhook_events is a non-empty list of events among {', '.join(WEBHOOK_EVENTS)}")
        unknown = [str(event)[:40] for event in events if event not in WEBHOOK_EVENTS]
        if unknown:
            raise ValueError(
                f"webhook event(s) {', '.join(map(repr, unknown))} unknown; events: {', '.join(WEBHOOK_EVENTS)}"
            )
        return tuple(dict.fromkeys(events))

    @field_validator("deadline")
    @classmethod
    def _aware_deadline(cls, deadline: datetime | None) -> datetime | None:
        if deadline is not None and deadline.tzinfo is None:
            raise ValueError(f"deadline {deadline.isoformat()} has no time zone: give one (e.g. +00:00 or Z)")
        return deadline

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

    def check(self, limits: Limits, entry: ModelEntry | None = None) -> "Job":
        """Raise InvalidJob unless the task, its parameters and the input suit each other and ``limits``. The
        parameters are held to their schema at every depth and to ``entry``'s caps (the default caps without an
        entry): see pipeq.config.parameters."""
        try:
            spec = task_spec(self.task)
            check_parameters(spec.name, self.parameters, entry.caps if entry is not None else ParameterCaps())
        except ValueError as exc:
            raise InvalidJob(str(exc), "parameters") from None
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
    """A dict input has only keys ``spec`` accepts and those it needs, media by reference where media goes and
    nowhere else, a well-formed chat, and its text and media within ``limits``."""
    allowed = spec.dict_input_keys
    if not allowed:
        raise InvalidJob(f"{spec.name} takes no dict input")
    extra = sorted(set(item.value) - allowed)
    if extra:
        raise InvalidJob(
            f"dict input key(s) {', '.join(extra)} not accepted by {spec.name}; accepted: {', '.join(sorted(allowed))}"
        )
    check_media_positions(item.value)
    if "messages" not in item.value:
        missing = sorted(spec.required_input_keys - set(item.value))
        if missing:
            raise InvalidJob(f"{spec.name} needs the dict input key(s) {', '.join(missing)}")
    check_text_chars(item.value, limits)
    references = media_references(item.value)
    if len(references) > limits.max_media_references:
        raise InvalidJob(
            f"the dict input holds {len(references)} media references, more than the limit of "
            f"{limits.max_media_references} (limits.max_media_references): send the media in several jobs"
        )
    inline = sum(len(ref.data) for ref in references if isinstance(ref, InlineInput))
    if inline > limits.max_inline_bytes:
        raise InvalidJob(
            f"inline media of {inline} bytes exceeds the limit of {limits.max_inline_bytes}: "
            "upload it to object storage and reference it as s3://bucket/key instead"
        )


# -- where media goes: no URL or path is ever opened ------------------------------------------------------------------

CHAT_ROLES = ("system", "user", "assistant", "tool")
CHAT_MESSAGE_KEYS = frozenset({"role", "content"})
CHAT_PART_KEYS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "image": ("image", "url", "path"),
    "audio": ("audio", "url", "path"),
    "video": ("video", "url", "path"),
    "image_url": ("image_url",),
}
"""The content parts a chat may hold, by ``type``, and the keys each takes besides it: one of them, holding text
or a media reference (``image_url``: a reference, or OpenAI's ``{"url": <reference>}``)."""
_PART_EXAMPLE = '{"type": "text", "text": "..."} or {"type": "image", "image": "s3://bucket/key"}'
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_PATH = re.compile(r"^(/|\\|\.{1,2}[/\\]|~|[A-Za-z]:[/\\])")


def check_media_positions(value: dict, is_media: Callable[[Any], bool] = is_reference) -> None:
    """Raise InvalidJob unless media sits only where pipelines read media (a media key at the top of the dict input,
    decision's assets, a chat's media parts) and only media sits there, as ``is_media`` tells it (references in a
    job, fetched objects in the worker). Pipelines would download a URL or open a path found there themselves."""
    for key, item in value.items():
        if key in MEDIA_KEYS:
            _require_media(item, repr(key), is_media)
        elif key == ASSETS_KEY:
            if not isinstance(item, dict):
                raise InvalidJob(
                    f'{key!r} names images by placeholder, {{"<img-1>": "s3://bucket/key"}}, not {item!r:.60}'
                )
            for name, asset in item.items():
                _require_media(asset, f"assets[{name!r}]", is_media, many=False)
        elif key == "messages":
            chat_messages(value, is_media)
        else:
            _refuse_media(item, key, is_media)


def _require_media(value: Any, where: str, is_media: Callable[[Any], bool], many: bool = True) -> None:
    """``value`` is media, or (if ``many``) a list of them, lists nested; InvalidJob saying what it is otherwise."""
    if is_media(value):
        return
    if many and isinstance(value, list):
        for item in value:
            _require_media(item, where, is_media)
        return
    text = str(value)
    what = f"{type(value).__name__} {text[:100]!r}{'...' if len(text) > 100 else ''}"
    if isinstance(value, str):
        what += " (a path)" if _PATH.match(value) else " (a URL)" if _URL.match(value) else ""
    raise InvalidJob(
        f"{where} holds {what}, not media: upload it to object storage and pass an s3://bucket/key reference "
        "or inline bytes (URLs and paths are not fetched)"
    )


def _refuse_media(value: Any, key: str, is_media: Callable[[Any], bool]) -> None:
    """No media inside ``value``, found under ``key`` where pipelines read text."""
    if is_media(value):
        raise InvalidJob(f"media where none is expected (under {key!r}): put it under image(s), audio(s) or video(s)")
    if isinstance(value, dict):
        for item in value.values():
            _refuse_media(item, key, is_media)
    elif isinstance(value, list):
        for item in value:
            _refuse_media(item, key, is_media)


def chat_messages(value: dict, is_media: Callable[[Any], bool] = is_reference) -> list[dict]:
    """The messages of a chat input ``{"messages": [{"role": ..., "content": ...}, ...]}``; InvalidJob unless each
    has a known role and a content that is a string or a list of known parts, media in them as ``is_media``
    tells it (see CHAT_PART_KEYS)."""
    messages = value.get("messages")
    if set(value) != {"messages"} or not isinstance(messages, list) or not messages:
        raise InvalidJob('a chat input is {"messages": [{"role": ..., "content": ...}, ...]}, at least one message')
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise InvalidJob(f"each chat message needs a role (string) and a content, not {str(message)[:80]!r}")
        if message["role"] not in CHAT_ROLES:
            raise InvalidJob(f"message {index} has the role {message['role'][:40]!r}; roles: {', '.join(CHAT_ROLES)}")
        if extra := sorted(set(message) - CHAT_MESSAGE_KEYS):
            raise InvalidJob(
                f"message {index} has the key(s) {', '.join(extra)}; a chat message has a role and a content"
            )
        content = message["content"]
        if isinstance(content, list):
            for part in content:
                _check_part(part, index, is_media)
        elif not isinstance(content, str):
            raise InvalidJob(
                f"the content of message {index} is a string or a list of parts like {_PART_EXAMPLE}, "
                f"not {type(content).__name__}"
            )
    return messages


def _check_part(part: Any, index: int, is_media: Callable[[Any], bool]) -> None:
    """A chat content part of a known type with one of that type's keys, holding text or media."""
    kind = part.get("type") if isinstance(part, dict) else None
    keys = CHAT_PART_KEYS.get(kind) if isinstance(kind, str) else None
    if keys is None:
        raise InvalidJob(
            f"message {index} holds the content part {str(part)[:80]!r}: a part is {_PART_EXAMPLE}, of a type among "
            f"{', '.join(CHAT_PART_KEYS)}"
        )
    given = [key for key in part if key != "type"]
    if len(given) != 1 or given[0] not in keys:
        raise InvalidJob(
            f"message {index}: a part of type {kind!r} has one key besides its type, one of {', '.join(keys)}; "
            f"not {', '.join(given) or 'none'}"
        )
    item = part[given[0]]
    if kind == "text":
        if not isinstance(item, str):
            raise InvalidJob(f"a text part's text is a string, not {type(item).__name__}")
    elif kind == "image_url" and isinstance(item, dict) and set(item) == {"url"} and not is_media(item):
        _require_media(item["url"], "'image_url'", is_media, many=False)
    else:
        _require_media(item, repr(given[0]), is_media, many=False)


def chat_size(messages: list[dict]) -> int:
    """Characters of a chat's text, the measure held against ``max_text_chars``; media parts count for nothing."""
    return sum(_text_size(message["content"]) for message in messages)


def _text_size(content: Any) -> int:
    """Characters of a message's content: a string, or a list of parts like ``{"type": "text", "text": ...}``."""
    if isinstance(content, list):
        return sum(len(str(part.get("text", ""))) if isinstance(part, dict) else len(str(part)) for part in content)
    return len(str(content))


def text_chars(value: dict) -> int:
    """Characters of a dict input's text, the measure held against ``max_text_chars``: a chat's text, or every
    string elsewhere, the keys of nested dicts (a table's columns, a question's name) included; media references
    count for nothing (their limits are in bytes)."""
    return sum(chat_size(item) if key == "messages" else _chars(item) for key, item in value.items())


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return 0 if is_reference(value) else sum(len(key) + _chars(item) for key, item in value.items())
    if isinstance(value, list):
        return sum(_chars(item) for item in value)
    return 0


def check_text_chars(value: dict, limits: Limits) -> None:
    """Raise InvalidJob if the dict input (a chat: its text) holds more characters than ``limits.max_text_chars``."""
    size = text_chars(value)
    if size > limits.max_text_chars:
        what = "chat" if "messages" in value else "text in the dict input"
        raise InvalidJob(
            f"{what} of {size} characters exceeds the limit of {limits.max_text_chars} (limits.max_text_chars)"
        )


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
    ``"s3://"`` shorthands and defaults left out do not matter), different when anything in PAYLOAD_FIELDS is, or
    when the webhook events asked for are not the default. Priority, deadline and result_ttl steer the job, they
    do not change what it is."""
    payload = job.model_dump(mode="json", include=PAYLOAD_FIELDS)
    if job.webhook_events != DEFAULT_WEBHOOK_EVENTS:
        payload["webhook_events"] = sorted(job.webhook_events)
    if isinstance(job.input, DictInput):
        payload["input"]["value"] = replace_media(job.input.value, lambda ref: ref.model_dump(mode="json"))
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
