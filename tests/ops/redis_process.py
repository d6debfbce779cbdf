"""A redis-server on a port the test chooses, so that Redis can go away and come back at the same address."""

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def redis_on(port: int) -> Iterator[str]:
    """A private, empty ``redis-server`` on loopback ``port`` until the block ends; yields its URL."""
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed"
    with tempfile.TemporaryDirectory(prefix="pipeq-ops-redis-") as workdir:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        process = subprocess.Popen([*command, "--dir", workdir, "--loglevel", "warning"], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}"
        try:
            with redis.Redis.from_url(url) as client:
                for _ in range(200):
                    try:
                        client.ping()
                        break
                    except redis.ConnectionError:
                        assert process.poll() is None, f"redis-server could not start on port {port}"
                        time.sleep(0.05)
                else:
                    raise AssertionError(f"redis-server did not answer on port {port}")
            yield url
        finally:
            process.terminate()
            process.wait(10)
