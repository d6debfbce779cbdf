"""The metrics and health endpoint: what it serves, what it refuses, and that a bad scraper holds up nothing."""

import socket

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from devtools.local_services import free_port
from pipeq.config.settings import Metrics
from pipeq.ops import metrics
from pipeq.ops.http import MAX_CONNECTIONS, Health, MetricsServer, PortInUse, check_port_free, serve
from tests.support.waiting import wait_until


@pytest.fixture
def server():
    registry = CollectorRegistry()
    Counter("pipeq_test_things_total", "Things counted by the test.", ["kind"], registry=registry).labels("a").inc(3)
    state = {"ready": None}
    server = MetricsServer("127.0.0.1", 0, Health(ready=lambda: state["ready"]), registry)
    yield server, state
    server.close()


def test_metrics_are_served_in_the_prometheus_text_format(server):
    server, _ = server
    response = httpx.get(f"{server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    [sample] = [s for s in families["pipeq_test_things"].samples if s.name == "pipeq_test_things_total"]
    assert (sample.labels, sample.value) == ({"kind": "a"}, 3.0)


def test_openmetrics_is_served_to_scrapers_that_ask_for_it(server):
    server, _ = server
    accept = "application/openmetrics-text; version=1.0.0"
    response = httpx.get(f"{server.url}/metrics", headers={"Accept": accept})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_readiness_says_why_not(server):
    server, state = server
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ok"}
    state["ready"] = "draining: the worker takes no more jobs"
    response = httpx.get(f"{server.url}/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "draining: the worker takes no more jobs"}
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive all the same


def test_a_check_that_raises_is_reported_not_fatal():
    def broken() -> str | None:
        raise RuntimeError("no such thing")

    server = MetricsServer("127.0.0.1", 0, Health(live=broken), CollectorRegistry())
    try:
        response = httpx.get(f"{server.url}/healthz")
        assert response.status_code == 503
        assert "RuntimeError: no such thing" in response.json()["reason"]
        assert httpx.get(f"{server.url}/metrics").status_code == 200
    finally:
        server.close()


@pytest.mark.parametrize("path", ["/", "/metrics/../etc/passwd", "/admin", "/healthz/x"])
def test_other_paths_are_not_found(server, path):
    server, _ = server
    assert httpx.get(f"{server.url}{path}").status_code == 404


def test_only_get_and_head_are_served(server):
    server, _ = server
    assert httpx.post(f"{server.url}/metrics", content=b"x").status_code == 501
    assert httpx.delete(f"{server.url}/readyz").status_code == 501
    head = httpx.head(f"{server.url}/metrics")
    assert head.status_code == 200 and head.content == b""


def test_a_port_in_use_names_the_port_and_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = Metrics(port=port)
        for start in (lambda: check_port_free(config), lambda: serve(config)):
            with pytest.raises(PortInUse) as refused:
                start()
            assert f"127.0.0.1:{port}" in str(refused.value)
            assert "PIPEQ_METRICS__PORT" in str(refused.value)


def test_no_port_no_endpoint():
    assert serve(Metrics()) is None
    check_port_free(Metrics())  # nothing to check


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_ports_out_of_range_are_refused_at_settings_load(port):
    with pytest.raises(ValueError, match="port"):
        Metrics(port=port)


def test_stuck_scrapers_hold_up_neither_other_scrapes_nor_a_job(server):
    """Connections that never send a request hold one thread each; past MAX_CONNECTIONS they are turned away,
    and a scrape that does come meanwhile is answered, or told to retry."""
    server, _ = server
    stuck = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        assert httpx.get(f"{server.url}/metrics", timeout=5).status_code == 200
        # The answered scrape's thread gives its slot back once it sees the connection closed: wait for that, or
        # the next stuck connection could find no slot and the crowded scrape take the one freed after it.
        wait_until(lambda: server.server.slots._value == 1, 5, message="the answered scrape kept its slot")
        stuck.append(socket.create_connection(("127.0.0.1", server.port)))
        wait_until(lambda: server.server.slots._value == 0, 5, message="the last stuck connection took no slot")
        crowded = httpx.get(f"{server.url}/metrics", timeout=5)
        assert crowded.status_code == 503 and crowded.headers["retry-after"] == "1"
    finally:
        for connection in stuck:
            connection.close()


def test_every_pipeq_metric_follows_the_naming_conventions():
    """The pipeq_ prefix, sizes and times in base units, _total for counters alone; no label that could be a job
    id (labels are drawn from a fixed few)."""
    declared = [value for value in vars(metrics).values() if hasattr(value, "_labelnames")]
    assert len(declared) >= 20
    for metric in declared:
        name = metric._name
        assert name.startswith("pipeq_"), name
        assert set(metric._labelnames) <= {"model", "queue", "device", "state", "outcome", "source"}, name
        if metric._type == "histogram" and "bytes" not in name and "seconds" not in name:
            assert name.endswith(("_jobs", "_calls", "_inputs")), name  # sizes counted in jobs, calls, inputs
        if metric._type == "gauge" or metric._type == "histogram":
            assert not name.endswith("_total"), name  # _total is for counters alone


def test_a_free_port_is_served():
    port = free_port()
    server = serve(Metrics(port=port))
    try:
        assert server is not None and server.port == port
        assert "pipeq_jobs_finished" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        server.close()
