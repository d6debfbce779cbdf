"""``pipeq queues``, ``pipeq metrics`` (a real exporter process, scraped) and ``pipeq health``."""

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from devtools.config_files import write_config
from devtools.local_services import free_port
from pipeq.cli.main import build_parser
from pipeq.config.settings import Metrics, Settings
from pipeq.ops.cli import format_age, run_cli
from pipeq.ops.http import Health, MetricsServer
from pipeq.producer import Client
from tests.ops.conftest import QUEUES, backlog_settings
from tests.ops.redis_process import redis_on
from tests.support.waiting import wait_until
from tests.support.workers import ROOT


def pipeq(
    capsys: pytest.CaptureFixture, *argv: str, settings: Settings | Callable[[], Settings] | None = None
) -> tuple[int, str, str]:
    """Run ``pipeq ARGV`` in this process: (exit status, stdout, stderr). ``settings`` is what the configuration
    loads to (a callable may raise); None fails the test if the command loads it."""

    def load() -> Settings:
        if settings is None:
            raise AssertionError("the command loaded the settings")
        return settings() if callable(settings) else settings

    capsys.readouterr()
    try:
        code = run_cli(build_parser().parse_args(list(argv)), load)
    except SystemExit as exc:  # argparse refusing an argument
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


# -- pipeq queues --------------------------------------------------------------------------------------------


def test_queues_prints_a_table_of_every_queue(capsys, own_settings, producer):
    producer.submit_many("text-classification", ["a", "b", "c"])
    producer.submit("fill-mask", "paris is the [MASK] of france", model="fill")

    code, out, err = pipeq(capsys, "queues", "--queue", "extra", settings=own_settings)

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["QUEUE", "WAITING", "HIGH", "NORMAL", "LOW", "HELD", "OLDEST", "AGE"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert list(rows) == [*QUEUES, "extra"]
    assert rows["cpu"][:5] == ["3", "0", "3", "0", "0"] and rows["cpu"][5].endswith("s")
    assert rows["gpu"] == ["0", "0", "0", "0", "0", "-"]
    assert rows["pipeq"][:5] == ["1", "0", "1", "0", "0"]
    assert rows["extra"] == ["0", "0", "0", "0", "0", "-"]


def test_queues_shows_what_waits_by_priority(capsys, own_settings, producer):
    producer.submit_many("text-classification", ["a", "b"], priority="high")
    producer.submit_many("text-classification", ["c", "d", "e"], priority="low")
    producer.submit("text-classification", "f")

    code, out, _ = pipeq(capsys, "queues", settings=own_settings)
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["cpu"][:5] == ["6", "2", "1", "3", "0"]

    code, out, _ = pipeq(capsys, "queues", "--json", settings=own_settings)
    assert code == 0
    cpu = json.loads(out)["cpu"]
    assert (cpu["waiting"], cpu["waiting_by_priority"]) == (6, {"high": 2, "normal": 1, "low": 3})


def test_queues_prints_json(capsys, own_settings, producer):
    producer.submit("text-classification", "a", model="classify-gpu")

    code, out, _ = pipeq(capsys, "queues", "--json", settings=own_settings)

    assert code == 0
    backlog = json.loads(out)
    assert list(backlog) == QUEUES
    assert backlog["gpu"]["waiting"] == 1 and backlog["gpu"]["held"] == 0 and backlog["gpu"]["oldest_age_s"] >= 0
    assert backlog["cpu"] == {
        "waiting": 0,
        "waiting_by_priority": {"high": 0, "normal": 0, "low": 0},
        "held": 0,
        "oldest_age_s": 0.0,
    }


def test_queues_exits_1_saying_what_to_check_when_redis_cannot_be_read(capsys):
    port = free_port()
    unreachable = backlog_settings(f"redis://:s3cret@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1")

    code, out, err = pipeq(capsys, "queues", settings=unreachable)

    assert (code, out) == (1, "")
    assert f"could not read the backlog from the broker's Redis at redis://127.0.0.1:{port}/0" in err
    assert "PIPEQ_BROKER_URL" in err and "s3cret" not in err


def test_queues_exits_2_on_a_configuration_it_cannot_use(capsys, own_settings):
    def broken() -> Settings:
        raise FileNotFoundError("PIPEQ_CONFIG names /nowhere.toml, which is not a file")

    code, _, err = pipeq(capsys, "queues", settings=broken)
    assert code == 2
    assert "the configuration could not be read: PIPEQ_CONFIG names /nowhere.toml" in err

    amqp = own_settings.model_copy(update={"broker_url": "amqp://guest@rabbit//"})
    code, _, err = pipeq(capsys, "queues", settings=amqp)
    assert code == 2
    assert "read from a Redis broker" in err and "broker_url (PIPEQ_BROKER_URL)" in err

    no_port = own_settings.model_copy(update={"broker_url": "redis://:s3cret@127.0.0.1:port/0"})
    code, _, err = pipeq(capsys, "metrics", "--port", str(free_port()), settings=no_port)
    assert code == 2
    assert "broker_url (PIPEQ_BROKER_URL) is not a usable Redis URL" in err and "s3cret" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["queues", "--queue", ""], "expected a queue name, got an empty string"),
        (["queues", "--queue", "two words"], "'two words' is not a queue name"),
        (["queues", "--queue", "tab\there"], "is not a queue name"),
        (["metrics", "--queue", "q" * 201], "too long for a queue name: 201 characters, at most 200"),
        (["metrics", "--port", "0"], "expected a TCP port, 1 to 65535, got '0'"),
        (["metrics", "--port", "http"], "expected a TCP port, 1 to 65535, got 'http'"),
        (["metrics", "--host", ""], "expected an address to listen on"),
        (["health", "--port", "70000"], "expected a TCP port, 1 to 65535, got '70000'"),
        (["health", "--timeout", "-1"], "expected a positive number of seconds, got '-1'"),
        (["health", "--timeout", "nan"], "expected a positive number of seconds, got 'nan'"),
        (["health", "--url", "ftp://127.0.0.1/readyz"], "expected an http:// or https:// URL"),
        (["health", "--url", "127.0.0.1:9100"], "expected an http:// or https:// URL"),
        (["health", "--url", "http://127.0.0.1:99999/readyz"], "has no valid port"),
        (["health", "--url", "http:///readyz"], "names no host"),
    ],
)
def test_bad_arguments_are_refused_with_exit_2_and_a_message(capsys, argv, message):
    code, out, err = pipeq(capsys, *argv)

    assert (code, out) == (2, "")
    assert message in err


def test_ages_are_printed_for_people():
    assert [format_age(age) for age in (0, 0.9, 42, 185, 7620, 273600)] == [
        "0s",
        "0s",
        "42s",
        "3m05s",
        "2h07m",
        "3d04h",
    ]


# -- pipeq metrics -------------------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, str | None], float]:
    """Every sample of a scrape by (name, queue label)."""
    return {
        (sample.name, sample.labels.get("queue")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def exporter(tmp_path) -> Iterator[tuple[str, int, subprocess.Popen]]:
    """``pipeq metrics`` in a process of its own, reading a Redis of the test's own on a fixed port; yields the
    exporter's URL, the Redis port and the process (the Redis runs while the test holds it: see redis_on)."""
    redis_port, port = free_port(), free_port()
    config = write_config(
        backlog_settings("redis://unused", "redis://unused", metrics=Metrics(port=port)), tmp_path / "pipeq.toml"
    )
    env = dict(os.environ, PIPEQ_CONFIG=str(config), PIPEQ_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0")
    command = [sys.executable, "-m", "pipeq.cli", "metrics", "--queue", "extra"]
    log = (tmp_path / "exporter.log").open("w+")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, f"the exporter exited: {(tmp_path / 'exporter.log').read_text()}"
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, timeout=60, interval=0.1)
        yield url, redis_port, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


def test_the_exporter_serves_the_backlog_and_outlives_redis(exporter):
    url, redis_port, process = exporter
    with redis_on(redis_port) as redis_url:
        producer = Client(backlog_settings(f"{redis_url}/0", f"{redis_url}/1"))
        producer.submit_many("text-classification", ["a", "b"])
        producer.close()

        scraped = samples(httpx.get(f"{url}/metrics").text)
        assert scraped[("pipeq_backlog_up", None)] == 1
        assert scraped[("pipeq_queue_waiting_jobs", "cpu")] == 2
        assert scraped[("pipeq_queue_held_jobs", "cpu")] == 0
        assert scraped[("pipeq_queue_oldest_waiting_age_seconds", "cpu")] >= 0
        assert scraped[("pipeq_queue_waiting_jobs", "extra")] == 0
        assert {queue for name, queue in scraped if name == "pipeq_queue_waiting_jobs"} == {*QUEUES, "extra"}
        assert ("process_cpu_seconds_total", None) in scraped  # the default registry's process metrics
        assert httpx.get(f"{url}/readyz").json() == {"status": "ok"}

    # Redis went away: only pipeq_backlog_up 0, and not ready (alive all the same).
    scraped = samples(httpx.get(f"{url}/metrics").text)
    assert scraped[("pipeq_backlog_up", None)] == 0
    assert not [name for name, _ in scraped if name.startswith("pipeq_queue_")]
    readiness = httpx.get(f"{url}/readyz")
    assert readiness.status_code == 503
    assert f"redis://127.0.0.1:{redis_port}/0" in readiness.json()["reason"]
    assert httpx.get(f"{url}/healthz").status_code == 200

    with redis_on(redis_port):  # back, at the same address (and empty)
        scraped = samples(httpx.get(f"{url}/metrics").text)
        assert scraped[("pipeq_backlog_up", None)] == 1
        assert scraped[("pipeq_queue_waiting_jobs", "cpu")] == 0
        assert httpx.get(f"{url}/readyz").status_code == 200

    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0


def test_metrics_exits_2_when_its_port_is_in_use(capsys, own_settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        code, _, err = pipeq(capsys, "metrics", "--port", str(port), settings=own_settings)

    assert code == 2
    assert f"127.0.0.1:{port} is already in use" in err
    assert "[metrics] port" in err and "PIPEQ_METRICS__PORT" in err


def test_metrics_exits_2_naming_the_setting_and_the_flag_without_a_port(capsys, own_settings):
    code, _, err = pipeq(capsys, "metrics", settings=own_settings)

    assert code == 2
    assert "no port to serve on" in err
    assert "[metrics] port" in err and "PIPEQ_METRICS__PORT" in err and "--port" in err


# -- pipeq health --------------------------------------------------------------------------------------------


@pytest.fixture
def endpoint() -> Iterator[tuple[MetricsServer, dict]]:
    """A metrics endpoint whose readiness the test sets: ``state["ready"]`` is None or the reason."""
    state: dict = {"ready": None}
    server = MetricsServer("127.0.0.1", 0, Health(ready=lambda: state["ready"]), CollectorRegistry())
    yield server, state
    server.close()


def test_health_exits_0_when_ready_and_1_with_the_reason_when_not(capsys, endpoint):
    server, state = endpoint

    assert pipeq(capsys, "health", "--port", str(server.port)) == (0, "ready\n", "")

    state["ready"] = "draining: the worker takes no more jobs"
    code, out, err = pipeq(capsys, "health", "--port", str(server.port))
    assert (code, out) == (1, "")
    assert f"http://127.0.0.1:{server.port}/readyz answered 503: draining: the worker takes no more jobs" in err


def test_health_takes_its_port_from_the_settings_and_a_url_over_everything(capsys, endpoint, own_settings):
    server, state = endpoint
    state["ready"] = "not yet"
    configured = own_settings.model_copy(update={"metrics": Metrics(port=server.port)})
    assert pipeq(capsys, "health", settings=configured)[0] == 1

    state["ready"] = None
    assert pipeq(capsys, "health", settings=configured)[0] == 0
    assert pipeq(capsys, "health", "--url", f"{server.url}/readyz")[0] == 0
    assert pipeq(capsys, "health", "--url", server.url)[0] == 0  # no path: /readyz
    code, _, err = pipeq(capsys, "health", "--url", f"{server.url}/nowhere")
    assert code == 1 and "answered 404" in err
    code, _, err = pipeq(capsys, "health", "--url", f"http://127.0.0.1:{free_port()}/readyz", "--port", "1")
    assert code == 1 and "no answer" in err  # --url wins over --port


def test_health_exits_1_saying_so_when_nothing_listens(capsys):
    port = free_port()

    code, out, err = pipeq(capsys, "health", "--port", str(port), "--timeout", "2")

    assert (code, out) == (1, "")
    assert f"no answer from http://127.0.0.1:{port}/readyz: ConnectionRefusedError" in err


def test_health_exits_2_without_a_port_naming_the_setting(capsys, own_settings):
    code, _, err = pipeq(capsys, "health", settings=own_settings)

    assert code == 2
    assert "[metrics] port" in err and "PIPEQ_METRICS__PORT" in err and "--port" in err


def test_health_says_why_a_configuration_cannot_be_read(capsys):
    def broken() -> Settings:
        raise ValueError("1 validation error for Settings\nmetrics.port\n  Input should be less than or equal to 65535")

    code, _, err = pipeq(capsys, "health", settings=broken)

    assert code == 2
    assert "the configuration could not be read" in err and "metrics.port" in err
