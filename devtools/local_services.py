"""Private services on loopback for the demo, tests and benchmarks: redis-server, RabbitMQ and an S3-compatible server
(moto)."""

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

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


DEBIAN_RABBITMQ_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"
"""The start script Debian's ``/usr/sbin/rabbitmq-server`` runs: that wrapper, run as root, switches to the
``rabbitmq`` user (``su``) in ``/var/lib/rabbitmq``, where a private node could not keep its files; the script
itself runs as any user."""
RABBITMQ_START_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1
"""Linux's prctl option: a signal for this process when its parent dies."""


@contextmanager
def rabbitmq_server(consumer_timeout_ms: int = 30 * 60 * 1000) -> Iterator[str]:
    """A private RabbitMQ node on free loopback ports (AMQP and Erlang distribution), its data, logs and Erlang
    cookie in a temporary directory (its HOME), no plugins, guest allowed from loopback only, and
    ``consumer_timeout`` set to ``consumer_timeout_ms``; yields ``amqp://guest:guest@127.0.0.1:PORT//``. It starts in
    about 4 s and is stopped, Erlang VM and all, at exit (an ``epmd`` it had to start keeps running, as it always
    does)."""
    script = _rabbitmq_script()
    port = free_port()
    dist_port = free_port()
    while dist_port == port:
        dist_port = free_port()
    with tempfile.TemporaryDirectory(prefix="pipeq-rabbitmq-") as workdir:
        env = _rabbitmq_environment(workdir, port, dist_port, consumer_timeout_ms)
        log_path = os.path.join(workdir, "startup.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [script],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_own_group_dies_with_parent,
            )
        url = f"amqp://guest:guest@127.0.0.1:{port}//"
        try:
            _wait_for_amqp(url, process, log_path)
            yield url
        finally:
            _stop_group(process)


def _own_group_dies_with_parent() -> None:
    """In the child, before it runs: a process group of its own (to stop the node and its VM together), and on
    Linux a SIGTERM when the parent dies (a test run killed before its fixtures end leaves no node behind)."""
    os.setsid()
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _rabbitmq_script() -> str:
    if os.access(DEBIAN_RABBITMQ_SCRIPT, os.X_OK):
        return DEBIAN_RABBITMQ_SCRIPT
    found = shutil.which("rabbitmq-server") or shutil.which("rabbitmq-server", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError(
            "rabbitmq-server is not installed: run `make system-deps` (it installs it) or apt-get install"
            " rabbitmq-server"
        )
    return found


def _rabbitmq_environment(workdir: str, port: int, dist_port: int, consumer_timeout_ms: int) -> dict[str, str]:
    """The environment of a private node: every file under ``workdir``, none of the machine's RabbitMQ settings
    (``/etc/rabbitmq/rabbitmq-env.conf`` names the system node), the distribution on loopback."""
    config = os.path.join(workdir, "rabbitmq.conf")
    with open(config, "w") as file:
        file.write(f"loopback_users.guest = true\nconsumer_timeout = {consumer_timeout_ms}\n")
    plugins = os.path.join(workdir, "enabled_plugins")
    with open(plugins, "w") as file:
        file.write("[].\n")
    env_file = os.path.join(workdir, "rabbitmq-env.conf")
    open(env_file, "w").close()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    return {
        **inherited,
        "HOME": workdir,  # the Erlang cookie goes here; rabbitmqctl needs the same HOME
        "RABBITMQ_NODENAME": f"pipeq-{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONF_ENV_FILE": env_file,
        "RABBITMQ_CONFIG_FILE": config,
        "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(workdir, "advanced.config"),  # absent: none
        "RABBITMQ_ENABLED_PLUGINS_FILE": plugins,
        "RABBITMQ_MNESIA_BASE": os.path.join(workdir, "mnesia"),
        "RABBITMQ_LOG_BASE": os.path.join(workdir, "log"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }


def _wait_for_amqp(url: str, process: subprocess.Popen, log_path: str) -> None:
    """Return once the node accepts an AMQP connection; RuntimeError (with the end of its log) if it exits or
    does not within :data:`RABBITMQ_START_TIMEOUT_S`."""
    import amqp

    address = urlsplit(url)
    deadline = time.monotonic() + RABBITMQ_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            break
        connection = amqp.Connection(
            f"{address.hostname}:{address.port}", userid=address.username, password=address.password, connect_timeout=1
        )
        try:
            connection.connect()
            connection.close()
            return
        except (OSError, amqp.exceptions.AMQPError):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    with open(log_path, errors="replace") as log:
        tail = log.read()[-2000:]
    raise RuntimeError(f"rabbitmq-server did not start (exit status {process.poll()}); its output:\n{tail}")


def _stop_group(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the process group (the start script and its Erlang VM: a clean stop), SIGKILL if it lingers."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


SENTINEL_MASTER = "pipeq"


class SentinelGroup:
    """A Redis primary, its replica and three sentinels on free loopback ports (see :func:`sentinel_group`)."""

    def __init__(self, workdir: str, databases: int = 64) -> None:
        self.workdir = workdir
        self.databases = databases
        self.master_name = SENTINEL_MASTER
        self.servers: dict[int, subprocess.Popen] = {}  # port -> redis-server, primary or replica
        self.sentinels: dict[int, subprocess.Popen] = {}
        self.failovers = 0

    def url(self, db: int = 0) -> str:
        """The ``sentinel://`` URL of database ``db`` (pipeq.core.redis_client)."""
        first, *others = self.sentinels
        head = f"sentinel://127.0.0.1:{first}/{db}?master_name={self.master_name}"
        return ";".join([head, *(f"sentinel://127.0.0.1:{port}" for port in others)])

    def start_server(self, port: int, replica_of: int | None = None) -> None:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", self._dir(f"redis-{port}"), "--loglevel", "warning", "--databases", str(self.databases)]
        args += ["--repl-diskless-sync", "no"]  # a diskless sync waits 5 s for more replicas first
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.servers[port] = subprocess.Popen([_redis_binary(), *args], stdout=subprocess.DEVNULL)
        _wait_for_ping(f"redis://127.0.0.1:{port}")

    def start_sentinel(self, port: int, primary: int) -> None:
        config = os.path.join(self._dir(f"sentinel-{port}"), "sentinel.conf")
        with open(config, "w") as file:
            file.write(
                f"port {port}\nbind 127.0.0.1\ndir {os.path.dirname(config)}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {self.master_name} 1000\n"
                f"sentinel failover-timeout {self.master_name} 3000\n"
            )
        command = [_redis_binary(), config, "--sentinel", "--loglevel", "warning"]
        self.sentinels[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        _wait_for_ping(f"redis://127.0.0.1:{port}")

    def primary_port(self) -> int:
        """The primary's port, as the sentinels tell it."""
        for port in self.sentinels:
            try:
                with redis.Redis(port=port, socket_timeout=1) as sentinel:
                    return int(sentinel.execute_command("SENTINEL", "get-master-addr-by-name", self.master_name)[1])
            except redis.RedisError:
                continue
        raise RuntimeError("no sentinel answers")

    def replicas_in_sync(self) -> int:
        """How many replicas the primary has online (synchronised, following its writes)."""
        with redis.Redis(port=self.primary_port(), socket_timeout=1) as primary:
            info = primary.info("replication")
        replicas = [info[key] for key in info if key.startswith("slave") and isinstance(info[key], dict)]
        return sum(replica.get("state") == "online" for replica in replicas)

    def fail_over(self, timeout: float = 30.0, replica_lag_s: float = 0.0) -> float:
        """Kill the primary (SIGKILL, as a crash would), wait until the sentinels promote the replica and clients
        can write there, and restart the old primary as the new one's replica. Returns the seconds without a
        writable primary. ``replica_lag_s``: first stall the replica (SIGSTOP) that long, so that it lags behind the
        primary when it dies (as a busy replica or a slow link would), and resume it once the primary is dead.

        Waits first for a replica to be online (its full sync done): with one replica, killing the primary while the
        restarted one still syncs is a double fault, and Sentinel may promote the replica that holds nothing yet
        (Redis reports a never-synced replica's link as down for -1 s, which passes Sentinel's check). A soak with a
        failover every few seconds did that once and lost 12,530 of 20,000 jobs with the data."""
        self.wait_for_replica(timeout)
        old = self.primary_port()
        replicas = [process for port, process in self.servers.items() if port != old and process.poll() is None]
        if replica_lag_s:
            for replica in replicas:
                replica.send_signal(signal.SIGSTOP)
            time.sleep(replica_lag_s)
        killed_at = time.monotonic()
        self.servers[old].kill()
        self.servers[old].wait(10)
        for replica in replicas if replica_lag_s else ():
            replica.send_signal(signal.SIGCONT)
        while True:
            if time.monotonic() - killed_at > timeout:
                raise RuntimeError(f"the sentinels promoted no replica within {timeout} s")
            try:
                new = self.primary_port()
                if new != old:
                    with redis.Redis(port=new, socket_timeout=1) as primary:
                        if primary.info("replication")["role"] == "master":
                            break
            except (redis.RedisError, RuntimeError):
                pass
            time.sleep(0.05)
        down_s = time.monotonic() - killed_at
        self.failovers += 1
        # Back empty, as a server that keeps nothing on disk would: the snapshot a replica's last full sync left in
        # its folder carries a replication offset, and a restart from it would resume replication from that stale
        # point (a partial resync), silently missing every write since.
        shutil.rmtree(self._dir(f"redis-{old}"))
        self.start_server(old, replica_of=new)
        return down_s

    def wait_for_replica(self, timeout: float = 30.0) -> None:
        """Wait until the primary has a replica online again."""
        deadline = time.monotonic() + timeout
        while self.replicas_in_sync() < 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the primary had no replica online within {timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        for process in [*self.sentinels.values(), *self.servers.values()]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.sentinels.values(), *self.servers.values()]:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def _dir(self, name: str) -> str:
        path = os.path.join(self.workdir, name)
        os.makedirs(path, exist_ok=True)
        return path


@contextmanager
def sentinel_group() -> Iterator[SentinelGroup]:
    """A private Redis primary with one replica, watched by three sentinels (quorum 2, a primary silent for 1 s is
    down), all on free loopback ports; ``.url(db)`` is its ``sentinel://`` URL and ``.fail_over()`` kills the
    primary as a crash would."""
    with tempfile.TemporaryDirectory(prefix="pipeq-sentinel-") as workdir:
        group = SentinelGroup(workdir)
        try:
            primary = free_port()
            group.start_server(primary)
            group.start_server(free_port(), replica_of=primary)
            for _ in range(3):
                group.start_sentinel(free_port(), primary)
            group.wait_for_replica()
            deadline = time.monotonic() + 30
            while not _sentinels_see_each_other(group):
                if time.monotonic() > deadline:
                    raise RuntimeError("the sentinels did not find each other within 30 s")
                time.sleep(0.1)
            yield group
        finally:
            group.stop()


def _sentinels_see_each_other(group: SentinelGroup) -> bool:
    for port in group.sentinels:
        with redis.Redis(port=port, socket_timeout=1) as sentinel:
            master = sentinel.sentinel_master(group.master_name)
            if int(master.get("num-other-sentinels", 0)) < 2 or int(master.get("num-slaves", 0)) < 1:
                return False
    return True


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make test` (it installs it) or apt-get install it")
    return binary


def _wait_for_ping(url: str, tries: int = 100) -> None:
    client = redis.Redis.from_url(url)
    try:
        for _ in range(tries):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"{url} did not start")
    finally:
        client.close()
