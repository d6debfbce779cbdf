"""``pipeq ingest``: objects landing in object storage become jobs, by the rules in ``Settings.ingest``.

Three sources, in any combination: S3/MinIO bucket notifications read from a Redis list (MinIO's Redis target,
"access" format), notifications POSTed to a small HTTP endpoint (MinIO's webhook target), and polling
(``list_objects_v2``) for stores without notifications.

Exactly one job per object version: the job id is derived from bucket, key and ETag (else versionId, else the
event's sequencer), so a duplicate event, a poll finding an object an event announced, or a restart submits an
id that exists already, which enqueues nothing. The first matching rule decides an object's task.
"""

import argparse
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_plus

import redis

from pipeq.config.settings import IngestRule, Settings, load_settings
from pipeq.core.contract import ObjectInput
from pipeq.core.storage import s3_client
from pipeq.producer.client import Client

log = logging.getLogger("pipeq.ingest")

SEEN_KEY = "pipeq:ingest:seen"  # set of "bucket/key@etag": object versions already submitted (or skipped)
PRIMED_KEY = "pipeq:ingest:primed"  # set of "bucket/prefix" listings polled at least once
MAX_BODY_BYTES = 16 * 1024 * 1024
RETRY_SECONDS = 1.0
AUTH_TOKEN_ENV = "PIPEQ_INGEST_AUTH_TOKEN"


class MalformedEvent(ValueError):
    """An event (or one of its records) that is not a bucket notification pipeq can read."""


@dataclass(frozen=True)
class ObjectJob:
    """One object version and the rule that turns it into a job."""

    rule: IngestRule
    bucket: str
    key: str
    tag: str  # ETag (unquoted), else versionId, else the event's sequencer: what identifies this version
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def job_id(self) -> str:
        digest = hashlib.sha256(f"{self.bucket}\0{self.key}\0{self.tag}".encode()).hexdigest()
        return "s3-" + digest[:40]

    @property
    def seen(self) -> str:
        """This version's member in the polling state's set of seen objects."""
        return f"{self.bucket}/{self.key}@{self.tag}"

    def input(self) -> ObjectInput:
        return ObjectInput(uri=self.uri, version_id=self.version_id)


def match(
    rules: Sequence[IngestRule], bucket: str, key: str, tag: str, version_id: str | None = None
) -> ObjectJob | None:
    """The job for this object under the first rule matching it; None when none does (or for a folder marker)."""
    if key.endswith("/"):
        return None
    for rule in rules:
        if rule.matches(bucket, key):
            return ObjectJob(rule, bucket, key, tag, version_id)
    return None


def _text(value: Any) -> str | None:
    """A string field of an event or listing, without ETag quotes; None when absent or empty."""
    if not isinstance(value, str):
        return None
    return value.strip().strip('"') or None


def parse_event(body: bytes | str) -> Any:
    """The JSON document in ``body``; MalformedEvent when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"the event is not JSON: {exc}") from None


def event_records(event: Any) -> list[Any]:
    """The S3 records in an event: ``{"Records": [...]}`` (S3, MinIO's webhook body, which adds EventName and
    Key) or MinIO's access-format Redis entry ``[{"Event": [...], "EventTime": ...}]``; S3's test event has none."""
    entries = event if isinstance(event, list) else [event]
    records: list[Any] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise MalformedEvent(f"an event must be a JSON object (or a list of them), not {type(entry).__name__}")
        found = entry.get("Records", entry.get("Event"))
        if isinstance(found, list):
            records.extend(found)
        elif entry.get("Event") != "s3:TestEvent":
            raise MalformedEvent('an event needs a "Records" list (S3, MinIO webhook) or an "Event" list (MinIO)')
    return records


def _job_for_record(record: Any, rules: Sequence[IngestRule]) -> ObjectJob | None:
    if not isinstance(record, dict):
        raise MalformedEvent(f"a record must be a JSON object, not {type(record).__name__}")
    name = record.get("eventName")
    if not isinstance(name, str):
        raise MalformedEvent("the record has no eventName")
    if not name.removeprefix("s3:").startswith("ObjectCreated"):
        return None  # deletions, reads, restores: nothing to run
    try:
        bucket, obj = record["s3"]["bucket"]["name"], record["s3"]["object"]
        key = obj["key"]
    except (KeyError, TypeError):
        raise MalformedEvent(f"{name} record without s3.bucket.name and s3.object.key") from None
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key and isinstance(obj, dict)):
        raise MalformedEvent(f"{name} record with an empty or non-string bucket name or key")
    key = unquote_plus(key)  # S3 and MinIO URL-encode keys in events ('+' for spaces)
    version_id = _text(obj.get("versionId"))
    tag = _text(obj.get("eTag")) or version_id or _text(obj.get("sequencer"))
    if tag is None:
        raise MalformedEvent(f"{name} record for s3://{bucket}/{key} has no eTag, versionId or sequencer")
    return match(rules, bucket, key, tag, version_id)


def jobs_for_event(event: Any, rules: Sequence[IngestRule]) -> list[ObjectJob]:
    """The jobs a bucket notification asks for: created objects matching a rule, keys decoded.

    Deletions and keys no rule matches are left out; a malformed record is logged and skipped (the others
    still count); MalformedEvent when the event as a whole is not a notification.
    """
    jobs = []
    for index, record in enumerate(event_records(event)):
        try:
            job = _job_for_record(record, rules)
        except MalformedEvent as exc:
            log.warning("skipping record %d of an event: %s", index, exc)
            continue
        if job is not None:
            jobs.append(job)
    return jobs


class Ingester:
    """Submits one job per new object version matching ``settings.ingest``, from events or polling.

    ``redis_url`` is the Redis holding the event list (default ``settings.broker_url``); what polling has
    seen is kept beside the job records, in the client's result-backend Redis.
    """

    def __init__(self, settings: Settings, client: Client, redis_url: str | None = None) -> None:
        self.settings = settings
        self.rules = list(settings.ingest)
        self.client = client
        self.state = client.store.redis
        self.source = redis.Redis.from_url(redis_url or settings.broker_url)
        self._submitting = threading.Lock()  # one client, shared by the HTTP, list and polling threads
        self.page_size = 1000  # objects per list_objects_v2 call

    @cached_property
    def s3(self) -> Any:
        return s3_client(self.settings)

    def submit(self, job: ObjectJob) -> str | None:
        """Submit ``job`` (a no-op if its id exists) and mark its object seen; None if the job is invalid."""
        rule = job.rule
        try:
            with self._submitting:
                job_id = self.client.submit(
                    rule.task,
                    job.input(),
                    model=rule.model,
                    parameters=rule.parameters,
                    webhook=rule.webhook,
                    job_id=job.job_id,
                )
        except ValueError as exc:  # InvalidJob, or a bucket or key no s3:// reference can carry
            log.error("not submitting %s: %s", job.uri, exc)
            job_id = None
        else:
            log.info("%s -> job %s (%s)", job.uri, job_id, rule.task)
        self.state.sadd(SEEN_KEY, job.seen)
        return job_id

    def handle_event(self, event: Any) -> list[str]:
        """Submit the jobs a parsed bucket notification asks for; their ids (duplicates included)."""
        ids = [self.submit(job) for job in jobs_for_event(event, self.rules)]
        return [job_id for job_id in ids if job_id is not None]

    def run_redis_list(self, key: str, stop_event: threading.Event, block: float = 1.0) -> None:
        """Consume events pushed onto the Redis list ``key`` until ``stop_event`` is set.

        Each entry moves atomically to ``<key>:processing`` (BLMOVE) and is removed from there only after its
        jobs are submitted: entries an ingester left there when it died (or failed) are processed again first.
        """
        processing = f"{key}:processing"
        while not stop_event.is_set():
            try:
                for raw in self.source.lrange(processing, 0, -1):
                    self._process_entry(processing, raw)
                while not stop_event.is_set():
                    raw = self.source.blmove(key, processing, block, "LEFT", "RIGHT")
                    if raw is not None:
                        self._process_entry(processing, raw)
            except Exception:
                log.exception("reading events from Redis list %s failed; retrying in %s s", key, RETRY_SECONDS)
                stop_event.wait(RETRY_SECONDS)

    def _process_entry(self, processing: str, raw: bytes) -> None:
        try:
            self.handle_event(parse_event(raw))
        except MalformedEvent as exc:
            log.error("dropping an entry of %s: %s: %.300r", processing, exc, raw)
        self.source.lrem(processing, 1, raw)

    def serve_http(self, host: str, port: int, auth_token: str | None = None) -> ThreadingHTTPServer:
        """Accept events POSTed to ``host:port`` in a background thread; stop it with ``server.shutdown()``.

        With ``auth_token`` a request needs ``Authorization: Bearer <auth_token>`` (MinIO's auth_token).
        """
        handler = type("Handler", (_EventHandler,), {"ingester": self, "auth_token": auth_token})
        server = ThreadingHTTPServer((host, port), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="pipeq-ingest-http", daemon=True).start()
        return server

    def poll(self, backfill: bool = False) -> list[str]:
        """One pass over every rule's bucket and prefix: submit objects not seen before; their job ids.

        The first pass over a bucket/prefix only marks the objects already there as seen, unless ``backfill``.
        """
        ids: list[str] = []
        for bucket, prefix in dict.fromkeys((rule.bucket, rule.prefix) for rule in self.rules):
            listing = f"{bucket}/{prefix}"
            submitting = backfill or self.state.sismember(PRIMED_KEY, listing)
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size}
            ):
                jobs = [job for obj in page.get("Contents", []) if (job := self._listed(bucket, obj))]
                if not jobs:
                    continue
                seen = self.state.smismember(SEEN_KEY, [job.seen for job in jobs])
                fresh = [job for job, was_seen in zip(jobs, seen, strict=True) if not was_seen]
                if submitting:
                    ids.extend(job_id for job in fresh if (job_id := self.submit(job)) is not None)
                elif fresh:
                    self.state.sadd(SEEN_KEY, *[job.seen for job in fresh])
            self.state.sadd(PRIMED_KEY, listing)
        return ids

    def _listed(self, bucket: str, obj: dict) -> ObjectJob | None:
        etag = _text(obj.get("ETag"))  # quoted in listings, unquoted in events: the same id either way
        return match(self.rules, bucket, obj["Key"], etag) if etag else None

    def close(self) -> None:
        self.source.close()

    def run_polling(self, interval: float, backfill: bool, stop_event: threading.Event) -> None:
        """Poll every ``interval`` seconds until ``stop_event`` is set."""
        while not stop_event.is_set():
            try:
                self.poll(backfill)
            except Exception:
                log.exception("polling failed; trying again in %s s", interval)
            stop_event.wait(interval)


class _EventHandler(BaseHTTPRequestHandler):
    """POST <any path> with a bucket notification: 200 with the job ids, 400 if it is not one."""

    ingester: Ingester
    auth_token: str | None
    server_version = "pipeq-ingest"

    def do_POST(self) -> None:
        if self.auth_token and not hmac.compare_digest(
            self.headers.get("Authorization", "").encode(), f"Bearer {self.auth_token}".encode()
        ):
            return self._reply(401, {"error": "missing or wrong 'Authorization: Bearer <token>' header"})
        try:
            length = int(self.headers["Content-Length"])
        except (TypeError, ValueError):
            return self._reply(411, {"error": "a Content-Length header is required"})
        if length > MAX_BODY_BYTES:
            return self._reply(413, {"error": f"events are limited to {MAX_BODY_BYTES} bytes"})
        body = self.rfile.read(length)
        try:
            ids = self.ingester.handle_event(parse_event(body))
        except MalformedEvent as exc:
            return self._reply(400, {"error": str(exc)})
        except Exception as exc:  # Redis or the broker unreachable: the sender should retry
            log.exception("could not submit the jobs of a POSTed event")
            return self._reply(503, {"error": f"could not submit jobs: {exc}"})
        self._reply(200, {"jobs": ids})

    def do_GET(self) -> None:
        self._reply(200, {"status": "ok"})

    do_HEAD = do_GET  # MinIO checks that a webhook target is up

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            self.send_header("Connection", "close")  # the body may be unread
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.client_address[0], *args)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--http takes HOST:PORT, not {text!r}")
    return host or "0.0.0.0", int(port)


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``pipeq ingest`` to the ``pipeq`` command's subparsers."""
    parser = subparsers.add_parser(
        "ingest",
        help="turn new objects in object storage into jobs, by the config's [[ingest]] rules",
        description="Any combination of sources; runs until Ctrl-C. One job per object version, however often "
        "an object is announced or seen.",
    )
    parser.add_argument("--redis-list", metavar="KEY", help="read bucket notifications from this Redis list")
    parser.add_argument("--redis-url", metavar="URL", help="the Redis holding --redis-list (default: broker_url)")
    parser.add_argument("--http", metavar="HOST:PORT", type=_host_port, help="accept notifications POSTed here")
    parser.add_argument(
        "--auth-token",
        metavar="TOKEN",
        default=os.environ.get(AUTH_TOKEN_ENV),
        help=f"require 'Authorization: Bearer TOKEN' on --http requests (default: ${AUTH_TOKEN_ENV})",
    )
    parser.add_argument("--poll", type=float, metavar="SECONDS", help="list the rules' buckets every SECONDS")
    parser.add_argument(
        "--backfill", action="store_true", help="with --poll: submit objects already there (default: skip them)"
    )
    return parser


def run_cli(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Run ``pipeq ingest`` until Ctrl-C or SIGTERM; 2 when there is nothing to do."""
    settings = settings or load_settings()
    if not settings.ingest:
        print("pipeq ingest: no [[ingest]] rules in the configuration", file=sys.stderr)
        return 2
    if not (args.redis_list or args.http or args.poll):
        print("pipeq ingest: name at least one source: --redis-list, --http or --poll", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = Client(settings)
    ingester = Ingester(settings, client, redis_url=args.redis_url)
    stop = threading.Event()
    threads = []
    if args.redis_list:
        threads.append(threading.Thread(target=ingester.run_redis_list, args=(args.redis_list, stop)))
    if args.poll:
        threads.append(threading.Thread(target=ingester.run_polling, args=(args.poll, args.backfill, stop)))
    server = ingester.serve_http(*args.http, auth_token=args.auth_token) if args.http else None
    if server:
        log.info("accepting events on http://%s:%d/", *server.server_address[:2])
    for thread in threads:
        thread.start()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.set()
        if server:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join()
        ingester.close()
        client.close()
    return 0
