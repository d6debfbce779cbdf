"""The soak's services, each one the chaos loop can break and mend on the same port: a redis-server that keeps its
data across kill -9, moto's S3 server, pipeq worker subprocesses, and the webhook delivery worker."""

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from devtools.local_services import free_port
from tests.support.workers import start_worker_process

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 120.0


class PersistentRedis:
    """A private ``redis-server`` on a fixed loopback port whose data survives kill -9: append-only file, fsync on
    every write (``--appendonly yes --appendfsync always``), in a data directory of its own."""

    def __init__(self, data_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test` (it installs it)")
        self.binary, self.data_dir, self.port = binary, data_dir, free_port()
        self.process: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (again) and return once it answers PING with its data loaded."""
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
            "dir": str(self.data_dir),
            "logfile": str(self.data_dir / "redis.log"),
            "loglevel": "warning",
            "databases": "16",
        }
        command = [self.binary, *[part for name, value in options.items() for part in (f"--{name}", value)]]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_for_redis(self.url, self.process)

    def kill(self) -> None:
        """kill -9, as a crash or an OOM kill would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


def wait_for_redis(url: str, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Return once the server at ``url`` answers PING (it answers LOADING errors while it reads its AOF)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {timeout_s} s")
    finally:
        client.close()


class RestartableS3:
    """moto's S3 server on a fixed loopback port, stopped and started again there. Its objects live in this
    process's memory (moto's backends), not in the server, so they outlast a stop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


class WorkerPool:
    """``pipeq worker --device cpu`` subprocesses serving the ``pipeq`` queue, each logging to a file of its own;
    a killed one is replaced by a fresh process."""

    def __init__(self, config: Path, log_dir: Path, size: int) -> None:
        self.config, self.log_dir, self.size = config, log_dir, size
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self) -> None:
        while len(self.processes) < self.size:
            self.processes.append(self._spawn())

    def wait_ready(self) -> None:
        """Block until every worker's log says Celery is ready; RuntimeError if one exits or takes too long."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        for process in self.processes:
            log = self.log_of(process)
            while "ready." not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker {process.pid} did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)

    def kill_random(self, rng: random.Random) -> int:
        """kill -9 one worker chosen by ``rng``, start its replacement; the killed worker's pid."""
        victim = rng.choice(self.processes)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        self.processes.remove(victim)
        self.processes.append(self._spawn())
        return victim.pid

    def log_of(self, process: subprocess.Popen[bytes]) -> Path:
        return self.log_dir / f"worker-{process.pid}.log"

    def stop(self) -> None:
        """SIGTERM (the drain) to every worker, SIGKILL to any still running after a minute."""
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.started += 1
        scratch = self.log_dir / f"starting-{self.started}.log"
        process = start_worker_process(self.config, "pipeq", scratch)
        scratch.rename(self.log_of(process))  # the open file keeps being written under its new name
        return process


def start_webhook_worker(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``pipeq webhooks worker`` in a subprocess configured by ``config``."""
    env = dict(os.environ, PIPEQ_CONFIG=str(config))
    command = [sys.executable, "-m", "pipeq.cli", "webhooks", "worker", "--concurrency", "8", "--loglevel", "INFO"]
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
