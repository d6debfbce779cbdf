"""No URL or path is ever opened (issue 10): a URL or path where a pipeline would load media (a chat part, a
media key of a dict input, decision's assets) is refused at submission; published raw, skipping the producer, its
job fails on receipt; and were the contract's check skipped, the worker's decoding refuses it too. The loopback
listener a URL points at never hears from the worker, and a local file named by a path is never opened."""

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeq.core import contract
from pipeq.core.contract import Job, make_input
from pipeq.producer import InvalidJob
from tests.security.raw_jobs import final_record, publish_raw
from tests.support.jobs import failed
from tests.support.settings import model_name

pytestmark = pytest.mark.usefixtures("worker")

VISION = "image-text-to-text"
NOT_FETCHED = "not media: upload it to object storage and pass an s3://bucket/key reference or inline bytes"


@pytest.fixture
def listener() -> Iterator[tuple[str, list]]:
    """An HTTP server on loopback standing in for a metadata service: its URL, and every connection it gets."""
    connections: list = []

    class Handler(BaseHTTPRequestHandler):
        def handle(self) -> None:
            connections.append(self.client_address)
            super().handle()

        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/latest/meta-data/", connections
    finally:
        server.shutdown()
        server.server_close()


_opened: list[str] = []
_watched: set[str] = set()


def _record_opens(event: str, args: tuple) -> None:
    if event == "open" and args and str(args[0]) in _watched:
        _opened.append(str(args[0]))


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A local picture's path, and every time any thread opens it (an audit hook sees every ``open``)."""
    if not _watched:
        sys.addaudithook(_record_opens)  # hooks stay for the session; this one looks at watched paths only
    path = tmp_path / "pipeq-marker.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    _watched.add(str(path))
    _opened.clear()
    yield str(path), _opened
    _watched.discard(str(path))


def chat(*parts: dict) -> dict:
    return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "What is this?"}]}]}


URL_SHAPES = {
    "image_url part": lambda url: chat({"type": "image_url", "image_url": url}),
    "OpenAI image_url part": lambda url: chat({"type": "image_url", "image_url": {"url": url}}),
    "image part's url": lambda url: chat({"type": "image", "url": url}),
    "images key": lambda url: {"images": url, "text": "<image> What is this?"},
}
PATH_SHAPES = {
    "image part's path": lambda path: chat({"type": "image", "path": path}),
    "image part's image": lambda path: chat({"type": "image", "image": path}),
    "images key": lambda path: {"images": [path], "text": "<image> What is this?"},
}


def vision_job(value: dict) -> Job:
    return Job(task=VISION, model=model_name(VISION), input=make_input(value), parameters={"max_new_tokens": 2})


@pytest.mark.parametrize("shape", URL_SHAPES.values(), ids=URL_SHAPES.keys())
def test_a_url_where_media_goes_is_refused_at_submission(client, listener, shape):
    url, connections = listener
    with pytest.raises(InvalidJob) as refused:
        client.submit(VISION, shape(url), model=model_name(VISION))
    assert f"holds str '{url}' (a URL), {NOT_FETCHED}" in str(refused.value)
    assert connections == []


@pytest.mark.parametrize("shape", PATH_SHAPES.values(), ids=PATH_SHAPES.keys())
def test_a_path_where_media_goes_is_refused_at_submission(client, marker, shape):
    path, opened = marker
    with pytest.raises(InvalidJob) as refused:
        client.submit(VISION, shape(path), model=model_name(VISION))
    assert f"holds str '{path}' (a path), {NOT_FETCHED}" in str(refused.value)
    assert opened == []


def test_a_url_in_a_raw_message_fails_on_receipt_and_is_never_fetched(client, listener):
    url, connections = listener
    job = vision_job(URL_SHAPES["image_url part"](url))
    record = final_record(client, publish_raw(client, job))
    failed(record, "InvalidJob", f"'image_url' holds str '{url}' (a URL)")
    assert connections == []


def test_a_path_in_a_raw_message_fails_on_receipt_and_is_never_opened(client, marker):
    path, opened = marker
    job = vision_job(PATH_SHAPES["image part's path"](path))
    record = final_record(client, publish_raw(client, job))
    failed(record, "InvalidJob", f"'path' holds str '{path}' (a path)")
    assert opened == []


@pytest.mark.parametrize("shape", ["image_url part", "OpenAI image_url part"])
def test_past_the_contract_the_worker_still_refuses_urls(client, listener, monkeypatch, shape):
    """Were the contract's check skipped on receipt, decoding refuses the URL before any pipeline sees it."""
    monkeypatch.setattr(contract, "check_media_positions", lambda value, is_media=None: None)
    url, connections = listener
    record = final_record(client, publish_raw(client, vision_job(URL_SHAPES[shape](url))))
    failed(record, "WrongInputKind", "(a URL), not media")
    assert connections == []


def test_past_the_contract_the_worker_still_refuses_paths(client, marker, monkeypatch):
    monkeypatch.setattr(contract, "check_media_positions", lambda value, is_media=None: None)
    path, opened = marker
    record = final_record(client, publish_raw(client, vision_job(PATH_SHAPES["image part's image"](path))))
    failed(record, "WrongInputKind", f"'image' holds str '{path}' (a path)")
    assert opened == []
