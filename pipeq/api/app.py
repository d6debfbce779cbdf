"""The HTTP API: an ASGI app on the same client, contract and settings as every other producer.

It keeps no state of its own (records, limits and cursors live in Redis), so any number of replicas may run behind
a load balancer. Blocking calls (the client's Redis and broker work) run in the thread pool; waits and event
streams are awaited on the event loop (pipeq.api.watch) and bounded by ``api.max_streams``.
"""

import asyncio
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from hashlib import sha256
from importlib.resources import files
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import botocore.exceptions
import kombu.exceptions
import redis
import redis.asyncio
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from pipeq.api import schemas
from pipeq.api.catalogue_view import model_views
from pipeq.api.limits import Limits
from pipeq.api.problems import MEDIA_TYPE, Problem, unavailable
from pipeq.api.tokens import Principal, authenticate
from pipeq.api.uploads import presign_upload
from pipeq.api.watch import watch
from pipeq.config.settings import Settings
from pipeq.core.contract import InvalidJob, check_object_access
from pipeq.core.records import JobRecord, now
from pipeq.core.redis_client import async_redis_client
from pipeq.core.replication import NotReplicated
from pipeq.core.storage import s3_client
from pipeq.producer.client import Client, JobConflict, UnknownJob
from pipeq.producer.jsonl import refuse_constant

log = logging.getLogger("pipeq.api")
T = TypeVar("T")

API_VERSION = "1"
KEEPALIVE_S = 15.0
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}\Z")
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*\"?(\d{1,6})\"?", re.IGNORECASE)
DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    ConnectionError,
)
"""Errors that mean a service the API needs (Redis, the broker, object storage) does not answer: a 503."""
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ProblemView, "content": {MEDIA_TYPE: {}}, "description": description}
    for status, description in {
        400: "malformed request (JSON, headers, query)",
        401: "no token, or one the API does not accept",
        403: "outside the token's scope",
        413: "request body too large",
        429: "over a rate limit or the queued cap (see Retry-After)",
        503: "Redis, the broker or object storage does not answer (see Retry-After)",
    }.items()
}


class Api:
    """What the routes share: settings, the client, the async Redis for watching, limits and open streams."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self.client = client or Client(settings)
        self.tokens = {token.sha256: token for token in settings.api.tokens}
        self.limits = Limits(self.client.store)
        self.watcher = async_redis_client(settings.result_backend)
        endpoint = settings.api.uploads_endpoint_url or settings.s3_endpoint_url
        self.presigner = s3_client(settings.model_copy(update={"s3_endpoint_url": endpoint}), signature_version="s3v4")
        self.streams: Counter[str | None] = Counter()
        """Open waits and event streams, per caller (token name; None on an open API)."""

    def caller(self, authorization: str | None) -> Principal:
        """The authenticated caller, charged one request (Problem 401, 429)."""
        principal = authenticate(authorization, self.tokens)
        if principal.token is not None:
            rate = principal.token.requests_per_s
            self.limits.take(principal.token.name, "requests", rate, max(10, int(2 * rate)))
        return principal

    def record(self, principal: Principal, job_id: str) -> JobRecord:
        """The caller's job's record, settled (overdue jobs expired); Problem 404 where it is not the caller's."""
        stored = principal.stored_id(job_id)
        record = self.client.store.get(stored)
        if record is None or not principal.owns(record.owner):
            raise Problem(404, "unknown-job", f"no job {job_id!r}: never submitted by you, or its record expired")
        return self.client.settle_overdue([record])[0]

    def view(self, principal: Principal, record: JobRecord, resolve: bool = True) -> dict[str, Any]:
        """The caller's view of ``record``, with its offloaded result read back where ``resolve``."""
        if resolve:
            record = self.client.results.resolve(record)
        return schemas.job_view(record, principal.public_id(record.id))

    def stream_refusal(self, principal: Principal) -> str | None:
        """Why this process may not hold one more request of ``principal`` open, or None: ``api.max_streams`` in
        all, ``api.max_streams_per_token`` per token."""
        api = self.settings.api
        if self.streams.total() >= api.max_streams:
            return f"this API process holds its most open waits and streams ({api.max_streams})"
        if principal.owner is not None and self.streams[principal.owner] >= api.max_streams_per_token:
            return f"token {principal.owner!r} holds its most open waits and streams ({api.max_streams_per_token})"
        return None

    @asynccontextmanager
    async def stream_slot(self, principal: Principal) -> AsyncIterator[bool]:
        """Whether one more request of ``principal`` may be held open (a wait, an event stream); it holds a slot
        while the block runs."""
        if self.stream_refusal(principal) is not None:
            yield False
            return
        self.streams[principal.owner] += 1
        try:
            yield True
        finally:
            self.streams[principal.owner] -= 1

    async def wait_as_preferred(
        self, principal: Principal, record: JobRecord, prefer: str | None, headers: dict[str, str]
    ) -> JobRecord:
        """``record``, or the job once final if a ``Prefer: wait=N`` header asks to wait (N at most
        ``api.max_wait_s``) and a slot is free; then ``Preference-Applied`` joins ``headers``."""
        seconds = prefer_wait(prefer, self.settings.api.max_wait_s)
        if seconds is None or record.done:
            return record
        async with self.stream_slot(principal) as allowed:
            if not allowed:
                return record
            headers["Preference-Applied"] = f"wait={seconds:g}"
            return await self.wait(principal, record, seconds)

    async def updates(self, job_id: str, heartbeat_s: float | None = None) -> AsyncIterator[JobRecord]:
        """The job's record now and at each change until it is final (pipeq.api.watch), a queued one past its
        deadline made expired on the way (as the client's reads do); it ends if the record is gone."""
        async for seen in watch(self.watcher, job_id, heartbeat_s):
            if seen is None:
                return
            if seen.state == "queued" and seen.past_deadline():
                seen = (await run_in_threadpool(self.client.settle_overdue, [seen]))[0]
            yield seen
            if seen.done:
                return

    async def wait(self, principal: Principal, record: JobRecord, seconds: float) -> JobRecord:
        """``record`` once final, or as it is after ``seconds``."""
        latest = record
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for seen in self.updates(record.id):
                    latest = seen
        return latest

    async def close(self) -> None:
        await self.watcher.aclose()
        await run_in_threadpool(self.client.close)


def prefer_wait(prefer: str | None, longest: float) -> float | None:
    """The seconds a ``Prefer: wait=N`` header asks to hold the request (at most ``longest``), or None."""
    match = _PREFER_WAIT.search(prefer or "")
    return None if match is None else min(float(match[1]), longest)


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body; Problem 413 past ``limit`` bytes (read no further), 415 unless JSON, 400 if
    malformed."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Problem(415, "unsupported-media-type", f"send the body as application/json, not {content_type[:60]}")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Problem(413, "body-too-large", f"the body is larger than {limit} bytes (api.max_body_bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Problem(413, "body-too-large", f"the body is larger than {limit} bytes (api.max_body_bytes)")
    try:
        return json.loads(body, parse_constant=refuse_constant)
    except RecursionError:
        raise Problem(400, "malformed-json", "the body's JSON is nested too deeply") from None
    except ValueError as exc:
        raise Problem(400, "malformed-json", f"the body is not JSON: {str(exc)[:160]}") from None


def invalid(exc: InvalidJob, index: int | None = None) -> Problem:
    """The 422 (409 for an id conflict) of an InvalidJob, in the client's words, with its field."""
    error: dict[str, Any] = {"field": exc.field, "detail": getattr(exc, "reason", str(exc))}
    if index is not None:
        error["index"] = index
    if isinstance(exc, JobConflict):
        return Problem(409, "job-conflict", str(exc), [error])
    return Problem(422, "invalid-job", str(exc), [error])


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    """The API for ``settings`` (its ``api`` section: tokens, bounds, uploads)."""
    api = Api(settings, client)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await api.close()

    app = FastAPI(
        title="pipeq",
        version=API_VERSION,
        summary="Submit inference jobs to pipeq workers, follow them, and read their results.",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the console and /openapi.json are served here
        redoc_url=None,
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    app.state.api = api
    _handle_errors(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    def caller(authorization: Annotated[str | None, Header(description="Bearer pq_...")] = None) -> Principal:
        return api.caller(authorization)

    Caller = Annotated[Principal, Depends(caller)]

    async def blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(function, *args, **kwargs)

    @app.post(
        "/v1/jobs",
        status_code=201,
        response_model=schemas.JobView | schemas.SubmittedJobs,
        openapi_extra={"requestBody": _request_body()},
        responses={
            200: {"description": "the job already existed with this payload (Idempotent-Replayed: true)"},
            409: {"model": schemas.ProblemView, "description": "the id names another payload"},
            422: {"model": schemas.ProblemView, "description": "an invalid job (per-field errors)"},
        },
        tags=["jobs"],
    )
    async def submit_jobs(
        request: Request,
        principal: Caller,
        idempotency_key: Annotated[str | None, Header(description="makes a retried POST submit once")] = None,
        prefer: Annotated[str | None, Header(description="wait=N: hold a one-job POST until it ends")] = None,
    ) -> Response:
        """Submit one job (an object) or several (a list). Jobs are validated as the Python client does; a list is
        all or nothing. With ``Idempotency-Key`` (or ``id``) a retry returns the same job."""
        body = await read_json(request, settings.api.max_body_bytes)
        single = not isinstance(body, list)
        items = [body] if single else body
        if not items:
            raise Problem(422, "invalid-job", "the list of jobs is empty: send at least one")
        if len(items) > settings.api.max_jobs_per_request:
            raise Problem(
                413, "too-many-jobs", f"{len(items)} jobs exceed {settings.api.max_jobs_per_request} per request"
            )
        if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
            raise Problem(400, "bad-idempotency-key", "an Idempotency-Key is 1-255 visible ASCII characters")
        ids, existing, record = await blocking(_submit, api, principal, items, idempotency_key)
        if not single or record is None:
            return JSONResponse({"ids": [principal.public_id(job_id) for job_id in ids], "existing": existing}, 201)
        headers = {"Location": f"/v1/jobs/{principal.public_id(ids[0])}"}
        if existing:
            headers["Idempotent-Replayed"] = "true"
        record = await api.wait_as_preferred(principal, record, prefer, headers)
        view = await blocking(api.view, principal, record)
        return JSONResponse(view, 200 if existing else 201, headers=headers)

    @app.get("/v1/jobs/{job_id}", response_model=schemas.JobView, tags=["jobs"], responses=_not_found())
    async def get_job(
        job_id: str,
        principal: Caller,
        prefer: Annotated[str | None, Header(description="wait=N: hold the request until the job ends")] = None,
    ) -> Response:
        """The job: its state, progress, and once final its result (large ones read back) or error."""
        record = await blocking(api.record, principal, job_id)
        headers: dict[str, str] = {}
        record = await api.wait_as_preferred(principal, record, prefer, headers)
        return JSONResponse(await blocking(api.view, principal, record), headers=headers)

    @app.post("/v1/jobs/{job_id}/cancel", response_model=schemas.JobView, tags=["jobs"], responses=_not_found())
    async def cancel_job(job_id: str, principal: Caller) -> Response:
        """Cancel the job: a queued one never runs, a running one stops at its next piece or its result is
        dropped; a final one is returned as it is."""

        def cancel() -> dict[str, Any]:
            record = api.record(principal, job_id)
            return api.view(principal, api.client.cancel(record.id))

        return JSONResponse(await blocking(cancel))

    @app.get("/v1/jobs", response_model=schemas.JobPageView, tags=["jobs"])
    async def list_jobs(
        principal: Caller,
        state: Annotated[list[str] | None, Query(max_length=6, description="one or more states")] = None,
        model: Annotated[str | None, Query(max_length=200)] = None,
        since: Annotated[str | None, Query(max_length=64, description="ISO 8601, submission time")] = None,
        until: Annotated[str | None, Query(max_length=64, description="ISO 8601, submission time")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, Query(max_length=300)] = None,
    ) -> Response:
        """The caller's jobs, newest first, a page at a time (``next_cursor``)."""
        states = [name for value in state or [] for name in value.split(",") if name] or None

        def page() -> dict[str, Any]:
            try:
                found = api.client.list(states, model, since, until, limit, cursor, owner=principal.owner)
            except InvalidJob as exc:
                raise Problem(400, "bad-query", str(exc)) from None
            views = [api.view(principal, record, resolve=False) for record in found.records]
            return {"jobs": views, "next_cursor": found.cursor}

        return JSONResponse(await blocking(page))

    @app.get(
        "/v1/jobs/{job_id}/events",
        tags=["jobs"],
        responses={200: {"content": {"text/event-stream": {}}, "description": "state and progress events"}}
        | _not_found(),
    )
    async def job_events(job_id: str, principal: Caller) -> Response:
        """Server-Sent Events until the job ends: ``state`` (the job, on each change of state), ``progress`` (its
        progress), then the stream closes after the final ``state``."""
        record = await blocking(api.record, principal, job_id)
        refusal = api.stream_refusal(principal)
        if refusal is not None:
            raise Problem(
                429, "too-many-streams", f"{refusal}: close one, or retry later", headers={"Retry-After": "5"}
            )
        return StreamingResponse(
            _events(api, principal, record),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/v1/models", response_model=schemas.ModelList, tags=["models"])
    async def list_models(principal: Caller) -> dict[str, Any]:
        """The models the caller may submit to: tasks, input kinds and limits, parameters (JSON Schema, caps)."""
        return {"models": model_views(principal, settings)}

    @app.post(
        "/v1/uploads",
        status_code=201,
        response_model=schemas.UploadView,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("UploadRequest")}}}
        },
        responses={422: {"model": schemas.ProblemView, "description": "a refused content type or size"}},
        tags=["uploads"],
    )
    async def create_upload(request: Request, principal: Caller) -> dict[str, Any]:
        """A presigned URL to PUT one file to (its content type and size are signed into it), and the ``input``
        to submit it with."""
        body = await read_json(request, 4096)
        try:
            wanted = schemas.UploadRequest.model_validate(body)
        except ValidationError as exc:
            errors = [{"field": ".".join(map(str, e["loc"])), "detail": e["msg"]} for e in exc.errors()[:5]]
            detail = "; ".join(f"{e['field']}: {e['detail']}" for e in errors)
            raise Problem(422, "invalid-upload", detail, errors) from None
        return presign_upload(api.presigner, settings, principal, wanted.content_type, wanted.size, wanted.filename)

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], include_in_schema=False)
    async def readyz() -> dict[str, str]:
        await api.watcher.ping()
        return {"status": "ready"}

    console = files("pipeq.api") / "console"
    app.mount("/console", StaticFiles(directory=str(console)), name="console")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(console / "index.html"))

    app.add_middleware(SecurityHeaders, console=console_headers(settings))
    return app


class SecurityHeaders:
    """ASGI middleware: ``nosniff`` on every response, the console's headers on the console's (plain ASGI: the
    decorator form costs about 0.75 ms a request)."""

    def __init__(self, app: Any, console: dict[str, str]) -> None:
        self.app = app
        self.everywhere = [(b"x-content-type-options", b"nosniff")]
        self.console = self.everywhere + [(name.lower().encode(), value.encode()) for name, value in console.items()]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra = self.console if path == "/" or path.startswith("/console/") else self.everywhere

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def console_headers(settings: Settings) -> dict[str, str]:
    """The console's security headers: nothing but this API's own files, and uploads PUT to object storage (the
    settings' S3 endpoint, or AWS's)."""
    endpoint = urlsplit(settings.api.uploads_endpoint_url or settings.s3_endpoint_url or "https://*.amazonaws.com")
    storage = f"{endpoint.scheme}://{endpoint.netloc}"
    return {
        "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:;"
        f" connect-src 'self' {storage}; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        "Referrer-Policy": "no-referrer",
    }


def _submit(
    api: Api, principal: Principal, items: list[Any], idempotency_key: str | None
) -> tuple[list[str], int, JobRecord | None]:
    """Validate, scope-check, limit and enqueue the jobs of one POST: their stored ids, how many existed, and the
    record of a lone job (None for a list)."""
    settings = api.settings
    made = []
    key_digest = None if idempotency_key is None else sha256(idempotency_key.encode()).hexdigest()[:32]
    for index, item in enumerate(items):
        at = None if len(items) == 1 else index
        if not isinstance(item, dict):
            raise Problem(422, "invalid-job", f"item {index}: a job is a JSON object with task and input")
        request = dict(item)
        if key_digest is not None:
            if request.get("id") is not None:
                raise Problem(422, "invalid-job", "give an Idempotency-Key or job ids, not both")
            request["id"] = f"k-{key_digest}" if len(items) == 1 else f"k-{key_digest}-{index}"
        elif request.get("id") is None:
            request["id"] = uuid.uuid4().hex
        request["id"] = principal.submitted_id(request["id"])
        try:
            job, queue = api.client.make_request(request)
        except InvalidJob as exc:
            raise invalid(exc, at) from None
        entry = settings.catalogue.models[job.model]
        refusal = principal.refusal(entry)
        if refusal is None:
            try:
                check_object_access(job, principal.object_access(settings, entry))
            except InvalidJob as exc:
                refusal = ("input", str(exc))
        if refusal is not None:
            field, detail = refusal
            where = "" if at is None else f"item {index}: "
            raise Problem(403, "out-of-scope", where + detail, [{"field": field, "detail": detail, "index": at}])
        made.append((job, queue))
    token = principal.token
    reserved: list[str] = []
    if token is not None:
        api.limits.take(token.name, "jobs", token.jobs_per_s, token.burst, len(made))
        reserved = api.limits.reserve(token.name, [job.id for job, _ in made], token.max_queued, now())
    try:
        ids = api.client.enqueue(made, principal.owner)
    except InvalidJob as exc:
        if token is not None:
            api.limits.release(token.name, reserved)
        raise invalid(exc, getattr(exc, "position", None) if len(made) > 1 else None) from None
    except BaseException:
        if token is not None:
            api.limits.release(token.name, reserved)
        raise
    record = api.record(principal, principal.public_id(ids[0])) if len(items) == 1 else None
    return list(ids), ids.existing, record


async def _events(api: Api, principal: Principal, record: JobRecord) -> AsyncIterator[str]:
    """The event stream of one job: its state now, then each change, progress included; a keep-alive comment after
    KEEPALIVE_S without one; an ``error`` event if Redis stops answering."""
    async with api.stream_slot(principal):
        yield "retry: 2000\n\n"
        number = 0
        last_state, last_progress = None, None
        try:
            async for seen in api.updates(record.id, heartbeat_s=KEEPALIVE_S):
                if seen.state != last_state:
                    number += 1
                    yield _event("state", number, await run_in_threadpool(api.view, principal, seen))
                elif seen.progress is not None and seen.progress != last_progress:
                    number += 1
                    yield _event("progress", number, seen.progress.model_dump(mode="json"))
                else:
                    yield ": keep-alive\n\n"
                last_state, last_progress = seen.state, seen.progress
        except DOWN:
            yield _event("error", number + 1, unavailable("Redis stopped answering; reconnect later").document())


def _event(kind: str, number: int, data: Any) -> str:
    return f"event: {kind}\nid: {number}\ndata: {json.dumps(data, default=str)}\n\n"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _request_body() -> dict[str, Any]:
    """The documented body of POST /v1/jobs: a JobRequest, or a list of them."""
    job = _ref("JobRequest")
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"anyOf": [job, {"type": "array", "items": job, "maxItems": 1000}]}}
        },
    }


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the JobRequest that POST /v1/jobs documents (its body is read by the client)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            default = operation.get("responses", {}).get("422", {})
            if "HTTPValidationError" in json.dumps(default):
                del operation["responses"]["422"]  # FastAPI's own; its errors are 400 problems here
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        for model in (schemas.JobRequest, schemas.UploadRequest):
            components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = schema
    return app.openapi_schema


def _not_found() -> dict[int | str, dict[str, Any]]:
    return {404: {"model": schemas.ProblemView, "description": "no such job of yours"}}


def _handle_errors(app: FastAPI) -> None:
    """Every error as a problem document; a 500 says nothing of the code (it is logged)."""

    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> Response:
        return exc.response(request.url.path)

    @app.exception_handler(UnknownJob)
    async def unknown_job(request: Request, exc: UnknownJob) -> Response:
        return Problem(404, "unknown-job", str(exc)).response(request.url.path)

    @app.exception_handler(InvalidJob)
    async def invalid_job(request: Request, exc: InvalidJob) -> Response:
        return invalid(exc).response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": ".".join(map(str, e["loc"][1:])), "detail": e["msg"]} for e in exc.errors()[:5]]
        detail = "; ".join(f"{e['field']}: {e['detail']}" for e in errors)
        return Problem(400, "bad-request", detail, errors).response(request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "see the status"
        return Problem(exc.status_code, "http", detail, headers=exc.headers).response(request.url.path)

    for error in DOWN:

        @app.exception_handler(error)
        async def down(request: Request, exc: Exception) -> Response:
            log.warning("a service the API needs does not answer: %s", exc)
            return unavailable("Redis, the broker or object storage does not answer; retry later").response(
                request.url.path
            )

    @app.exception_handler(NotReplicated)
    async def not_replicated(request: Request, exc: NotReplicated) -> Response:
        log.warning("a submit was not replicated in time: %s", exc)
        detail = f"{exc}. Retrying with the same Idempotency-Key (or job id) is safe"
        return unavailable(detail).response(request.url.path)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return Problem(500, "internal", "an unexpected error; it is logged").response(request.url.path)
