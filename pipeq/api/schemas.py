"""The API's request and response documents, as pydantic models: they give the OpenAPI schema its shapes and turn
records into what a caller sees. Job requests are read by the Python client's own checks (``make_request``), so a
caller gets the same words as a Python producer; :class:`JobRequest` documents them."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from pipeq.core.records import JobRecord

HIDDEN_FIELDS = {"owner", "payload_sha256", "result_ref", "worker"}
"""Record fields a caller is not shown: who owns it (implied), digests, where results are kept, worker names."""


class JobRequest(BaseModel):
    """One job to submit. ``input`` is text, an ``s3://`` reference (an upload's ``input``), or a dict input."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="a transformers pipeline task, e.g. automatic-speech-recognition")
    input: str | dict[str, Any] = Field(description="text, s3://bucket/key, or a dict input (see GET /v1/models)")
    model: str | None = Field(default=None, description="a catalogue model (default: the task's default model)")
    parameters: dict[str, Any] | None = Field(default=None, description="the task's parameters (GET /v1/models)")
    webhook: str | None = Field(default=None, description="https URL told of the job's events (signed)")
    id: str | None = Field(
        default=None, description="your id for the job (idempotent: the same payload again is a no-op)"
    )
    priority: Literal["low", "normal", "high"] = "normal"
    deadline: datetime | None = Field(default=None, description="not started by then: expired, never run")
    ttl: float | None = Field(default=None, description="seconds from now: a relative deadline")
    webhook_events: list[Literal["started", "progress", "completed"]] | None = None
    result_ttl: int | None = Field(default=None, description="seconds the job's record is kept")


JobView = create_model(
    "JobView",
    __doc__="A job as its caller sees it: its record (state, progress, and once final its result or error) without"
    " what only operators need.",
    result_offloaded=(
        bool,
        Field(default=False, description="the result is too large for a listing: GET /v1/jobs/{id} returns it"),
    ),
    **{name: (field.annotation, field) for name, field in JobRecord.model_fields.items() if name not in HIDDEN_FIELDS},
)


def job_view(record: JobRecord, public_id: str) -> dict[str, Any]:
    """The view of ``record`` under the id its caller knows, as JSON-ready data."""
    view = record.model_dump(mode="json", exclude=HIDDEN_FIELDS)
    view["id"] = public_id
    view["result_offloaded"] = record.result is None and record.result_ref is not None
    return view


class SubmittedJobs(BaseModel):
    """What a POST of a list of jobs did: their ids, in order, and how many already existed (not enqueued again)."""

    ids: list[str]
    existing: int


class JobPageView(BaseModel):
    """A page of jobs, newest first; ``next_cursor`` goes on (null at the end)."""

    jobs: list[JobView]
    next_cursor: str | None


class ModelView(BaseModel):
    """A catalogue model as a producer needs it."""

    name: str
    task: str
    default: bool = Field(description="serves jobs of its task that name no model")
    input: dict[str, Any] = Field(description="what the input may be: kinds, dict keys, limits, upload types")
    parameters: dict[str, Any] = Field(description="JSON Schema of the job's parameters, the model's caps included")


class ModelList(BaseModel):
    models: list[ModelView]


class UploadRequest(BaseModel):
    """An upload to make: its content type and exact size (both are bound into the URL), and a file name."""

    model_config = ConfigDict(extra="forbid")

    content_type: str = Field(max_length=100, description="e.g. audio/wav; see the API's allowed upload types")
    size: int = Field(ge=1, description="bytes, exactly: the upload must send this Content-Length")
    filename: str | None = Field(default=None, max_length=200, description="kept (made plain) in the object's key")


class UploadView(BaseModel):
    """Where to PUT the file, with which headers, until when; and the ``input`` to put in a job."""

    url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str]
    input: str
    expires_at: datetime


class ProblemView(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="per field: {field, detail} (and index, for a list of jobs)"
    )
