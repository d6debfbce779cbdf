"""Private services on loopback for the demo, tests and benchmarks: redis-server and an S3-compatible server (moto)."""

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis


def isolate_environment(s3_key: str | None = None) -> None:
    """Make this process independent of the machine's settings, before transformers is imported: drop the PIPEQ_*
    variables, load models offline, quiet tokenizer threads and progress bars; with ``s3_key``, credentials for the
    private S3 server (it accepts any)."""
    for name in [name for name in os.environ if name.startswith("PIPEQ_")]:
        del os.environ[name]
    os.environ.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_PROGRESS_BARS="1"
    )
    if s3_key is not None:
        os.environ.update(AWS_ACCESS_KEY_ID=s3_key, AWS_SECRET_ACCESS_KEY=s3_key, AWS_DEFAULT_REGION="us-east-1")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def redis_server() -> Iterator[str]:
    """A private ``redis-server`` on a free loopback port; yields ``redis://127.0.0.1:PORT``."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make test` (it installs it) or apt-get install it")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pipeq-redis-") as workdir:
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--loglevel",
                "warning",
                "--databases",
                "64",
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}"
        try:
            client = redis.Redis.from_url(url)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            else:
                raise RuntimeError("redis-server did not start")
            client.close()
            yield url
        finally:
            process.terminate()
            process.wait(10)


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
