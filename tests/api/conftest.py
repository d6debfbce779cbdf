"""A real uvicorn serving the API on loopback, with tokens of several scopes, against the session's Redis, S3
server and worker."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from devtools.local_services import free_port
from pipeq.api.app import create_app
from pipeq.api.tokens import new_token
from pipeq.config.api import ApiToken
from pipeq.config.settings import Settings
from pipeq.producer import Client
from tests.support.settings import BUCKET, model_name

UPLOADS = f"s3://{BUCKET}/uploads/"
TOKENS = {name: new_token() for name in ("alpha", "beta", "slow", "capped", "chatty")}
"""Each test token's secret and hash."""


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def api_tokens() -> list[ApiToken]:
    """alpha: any model; beta: one model and one input folder; slow: 1 job/s, burst 2; capped: 3 jobs queued;
    chatty: 1 request/s (a burst of 10)."""
    digest = {name: pair[1] for name, pair in TOKENS.items()}
    return [
        ApiToken(name="alpha", sha256=digest["alpha"]),
        ApiToken(
            name="beta",
            sha256=digest["beta"],
            models=[model_name("text-classification")],
            input_prefixes=[f"s3://{BUCKET}/beta/"],
        ),
        ApiToken(name="slow", sha256=digest["slow"], jobs_per_s=1, burst=2),
        ApiToken(name="capped", sha256=digest["capped"], max_queued=3),
        ApiToken(name="chatty", sha256=digest["chatty"], requests_per_s=1),
    ]


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The API for ``settings`` in a real uvicorn on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)


PARKED = "parked"
"""A catalogue model on a queue no worker serves: its jobs stay queued."""


def with_api(settings: Settings, **api: object) -> Settings:
    """``settings`` with an API section (validated with the rest) and the PARKED model."""
    data = settings.model_dump(exclude={"catalogue"})
    text = next(model for model in data["models"] if model["name"] == model_name("text-classification"))
    data["models"].append({**text, "name": PARKED, "queue": PARKED, "default": False})
    return Settings.model_validate({**data, "api": api})


@pytest.fixture(scope="session")
def api_settings(settings: Settings) -> Settings:
    return with_api(settings, tokens=api_tokens(), uploads_prefix=UPLOADS, max_body_bytes=64 * 1024, max_wait_s=30)


@pytest.fixture(scope="session")
def api_url(api_settings: Settings, s3) -> Iterator[str]:
    with serve(api_settings) as url:
        yield url


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=60) as client:
        yield client


@pytest.fixture
def api_client(api_settings: Settings) -> Iterator[Client]:
    """The Python client on the API's settings (its catalogue includes PARKED)."""
    client = Client(api_settings)
    yield client
    client.close()
