"""The monitoring and autoscaling files under deploy/ ask only for metrics and labels pipeq exports.

Every PromQL expression of the Grafana dashboard (panel targets' ``expr``, template variables' queries), the KEDA
ScaledObjects (``query`` of each prometheus trigger) and the Prometheus alerting rules (``expr``) is checked
against the table of what pipeq exports: the prometheus_client metrics of :mod:`pipeq.ops.metrics` (as
registered in the default registry) and the backlog exporter's metrics declared there by name.

The PromQL "parser" is a few explicit regular expressions, not a grammar. It covers:

* metric names: every ``pipeq_[a-z0-9_]+`` outside string literals must be an exported series (a counter as
  ``<name>_total``, a histogram as ``_bucket`` / ``_sum`` / ``_count``, a gauge as its name);
* label matchers: the label names inside ``pipeq_...{...}`` must be labels of that series;
* aggregations: the labels of ``by (...)`` / ``without (...)``, written before or after the aggregation's
  argument (``sum by (queue) (x)``, ``sum(x) by (queue)``), must be labels of every pipeq series in the argument;
* vector matching: the labels of ``on (...)`` / ``ignoring (...)`` must be labels of every pipeq series in the
  expression;
* ``label_values(<selector>, <label>)`` (Grafana variables): the label must be one of the selector's metric;
* legends: the ``{{label}}`` of a Grafana ``legendFormat`` must be kept by the expression: named in a ``by``
  clause; without aggregations, a label of every pipeq series in it (less ``without`` labels); none after a
  plain ``sum(...)``.

Everywhere, ``le`` is a label of ``_bucket`` series only, and Prometheus's target labels ``job`` and ``instance``
are labels of every series. Not covered: a label dropped by an inner aggregation and used by an outer one,
``label_replace`` / ``label_join``, ``group_left`` / ``group_right`` label lists, subqueries' semantics, and
metrics other than pipeq's (``up`` and the like are not checked).
"""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import pipeq.ops.metrics as pipeq_metrics
from pipeq.config.settings import drain_timeout, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "pipeq.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
EXAMPLE_CONFIG = ROOT / "config" / "pipeq.example.toml"

TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus attaches to every scraped series."""
METRICS_PORT = "9500"
"""The metrics port compose gives every pipeq process."""
PIPEQ_PROCESSES = {"worker", "webhooks", "ingest", "metrics"}
"""Long-running pipeq commands (the first word of a compose service's command): each serves /metrics."""

# -- what pipeq exports --------------------------------------------------------------------------------------


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name pipeq exports, with its labels (``job`` and ``instance`` not included).

    prometheus_client strips ``_total`` from a counter's name (the family ``pipeq_jobs_finished``, the sample
    ``pipeq_jobs_finished_total``) and exports a histogram as ``_bucket`` (with ``le``), ``_sum`` and ``_count``.
    ``_created`` samples are left out: dashboards have no use for them.
    """
    registered = {family.name: family.type for family in REGISTRY.collect()}
    table: dict[str, frozenset[str]] = {}
    for metric in vars(pipeq_metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name, labels, kind = metric._name, frozenset(metric._labelnames), metric._type
        assert registered.get(name) == kind, f"{name} ({kind}) is not in prometheus_client's default registry"
        if kind == "counter":
            table[f"{name}_total"] = labels
        elif kind == "histogram":
            table[f"{name}_bucket"] = labels | {"le"}
            table[f"{name}_sum"] = table[f"{name}_count"] = labels
        elif kind == "summary":
            table[name] = labels | {"quantile"}
            table[f"{name}_sum"] = table[f"{name}_count"] = labels
        elif kind == "gauge":
            table[name] = labels
        else:
            raise AssertionError(f"{name}: metric type {kind} is not handled by this test")
    for name, labels in pipeq_metrics.BACKLOG_LABELS.items():
        table[name] = frozenset(labels)
    table[pipeq_metrics.BACKLOG_UP[0]] = frozenset()
    return table


EXPORTED = exported_series()

# -- the PromQL checker --------------------------------------------------------------------------------------

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
METRIC = re.compile(r"(?<![\w:])(pipeq_[a-z0-9_]+)(?![\w:])")
SELECTOR = re.compile(r"(?<![\w:])(pipeq_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
AGGREGATION = re.compile(
    r"\b(sum|min|max|avg|group|stddev|stdvar|count|count_values|bottomk|topk|quantile|limitk|limit_ratio)\s*"
    r"(?:(by|without)\s*\(([^)]*)\)\s*)?\("
)
TRAILING_CLAUSE = re.compile(r"\s*(by|without)\s*\(([^)]*)\)")
VECTOR_MATCHING = re.compile(r"\b(on|ignoring)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\(\s*(.*)\s*,\s*([A-Za-z_]\w*)\s*\)\s*$", re.S)
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")


def _labels(text: str) -> list[str]:
    return [label.strip() for label in text.split(",") if label.strip()]


def _closing(text: str, opening: int) -> int:
    """The index of the parenthesis closing the one at ``opening``."""
    depth = 0
    for index in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced parentheses in {text!r}")


def _has(series: str, label: str) -> bool:
    return label in TARGET_LABELS or label in EXPORTED.get(series, frozenset())


def _kept_labels(series_used: list[str], clauses: list[tuple[str | None, list[str]]]) -> set[str]:
    """The labels an expression's result keeps, roughly: those of its ``by`` clauses; else, without an aggregation
    (or with ``without`` ones), those every series has, less the ``without`` labels; else (``sum(x)``) none."""
    if any(keyword == "by" for keyword, _ in clauses):
        return {label for keyword, labels in clauses if keyword == "by" for label in labels}
    if any(keyword is None for keyword, _ in clauses):
        return set()
    common = set.intersection(*({*EXPORTED.get(series, ()), *TARGET_LABELS} for series in series_used))
    return common - {label for _, labels in clauses for label in labels}


def check_promql(expr: str, legend: str = "") -> list[str]:
    """What is wrong with ``expr`` (and its Grafana ``legend``), as messages; none when it asks only for what pipeq
    exports. See the module docstring for what is covered."""
    problems: list[str] = []
    text = STRING.sub('""', expr)  # label values (and Grafana's "$queue") are not names
    if match := LABEL_VALUES.match(text.strip()):
        selector, label = match.groups()
        problems += check_promql(selector)
        for series in METRIC.findall(selector):
            if not _has(series, label):
                problems.append(f"label_values: {series} has no label {label!r}")
        return problems
    series_used = METRIC.findall(text)
    for series in series_used:
        if series not in EXPORTED:
            hint = ""
            if f"{series}_bucket" in EXPORTED:
                hint = " (a histogram: use _bucket, _sum or _count)"
            elif f"{series}_total" in EXPORTED:
                hint = " (a counter: use _total)"
            problems.append(f"{series} is not exported by pipeq{hint}")
    for series, matchers in SELECTOR.findall(text):
        for label in MATCHER.findall(matchers):
            if series in EXPORTED and not _has(series, label):
                problems.append(f"{series} has no label {label!r} (matcher)")
    clauses: list[tuple[str | None, list[str]]] = []  # (by, without or None, labels) of each aggregation
    for match in AGGREGATION.finditer(text):
        opening = match.end() - 1
        closing = _closing(text, opening)
        keyword, labels = match.group(2), match.group(3)
        if keyword is None and (after := TRAILING_CLAUSE.match(text, closing + 1)):
            keyword, labels = after.groups()
        clauses.append((keyword, _labels(labels or "")))
        for series in METRIC.findall(text[opening:closing]) if keyword else []:
            for label in _labels(labels):
                if series in EXPORTED and not _has(series, label):
                    problems.append(f"{series} has no label {label!r} ({match.group(1)} {keyword})")
    for keyword, labels in VECTOR_MATCHING.findall(text):
        for series in series_used:
            for label in _labels(labels):
                if series in EXPORTED and not _has(series, label):
                    problems.append(f"{series} has no label {label!r} ({keyword})")
    if legend and series_used:
        problems += [
            f"legend {{{{{label}}}}}: no such label in the result"
            for label in LEGEND_LABEL.findall(legend)
            if label not in _kept_labels(series_used, clauses)
        ]
    return problems


# -- where the expressions are -------------------------------------------------------------------------------


def _walk(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def dashboard_expressions() -> Iterator[tuple[str, str, str]]:
    """(where, expr, legend) of every panel target and template variable of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    for node in _walk(dashboard.get("panels", [])):
        for target in node.get("targets", []) if "type" in node else []:
            where = f"{DASHBOARD.name}: panel {node.get('title')!r} target {target.get('refId')}"
            assert target.get("expr", "").strip(), f"{where} has no expr"
            yield where, target["expr"], target.get("legendFormat", "")
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        query = query.get("query", "") if isinstance(query, dict) else query
        yield f"{DASHBOARD.name}: variable {variable['name']}", query, ""
        if variable.get("definition"):
            yield f"{DASHBOARD.name}: variable {variable['name']} definition", variable["definition"], ""


def keda_triggers() -> Iterator[tuple[Path, dict, dict]]:
    """(file, ScaledObject, trigger) of every prometheus trigger under deploy/keda/."""
    for path in sorted((DEPLOY / "keda").glob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "ScaledObject":
                for trigger in document["spec"]["triggers"]:
                    if trigger["type"] == "prometheus":
                        yield path, document, trigger


def rule_expressions() -> Iterator[tuple[str, str, str]]:
    """(where, expr, "") of every rule of the files prometheus.yml loads (rule_files, as mounted by compose)."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    for mounted in config.get("rule_files", []):
        path = PROMETHEUS.parent / Path(mounted).name
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                yield f"{path.name}: {name}", rule["expr"], ""


def all_expressions() -> list[tuple[str, str, str]]:
    keda = [(f"{path.name}: {obj['metadata']['name']}", t["metadata"]["query"], "") for path, obj, t in keda_triggers()]
    return [*dashboard_expressions(), *keda, *rule_expressions()]


# -- tests ---------------------------------------------------------------------------------------------------


def test_the_exported_table_follows_prometheus_client_naming():
    assert "pipeq_jobs_finished_total" in EXPORTED and "pipeq_jobs_finished" not in EXPORTED
    assert EXPORTED["pipeq_job_latency_seconds_bucket"] == {"model", "queue", "device", "le"}
    assert "pipeq_job_latency_seconds" not in EXPORTED
    assert EXPORTED["pipeq_queue_waiting_jobs"] == {"queue"}
    assert EXPORTED["pipeq_backlog_up"] == frozenset()


def test_every_query_asks_for_exported_metrics_and_labels():
    expressions = all_expressions()
    dashboard = [where for where, _, _ in expressions if where.startswith(DASHBOARD.name)]
    assert len(dashboard) >= 30, "the dashboard's expressions were not found"
    assert any(where.startswith("worker-gpu") for where, _, _ in expressions)
    assert any(where.startswith("alerts.yml") for where, _, _ in expressions)
    problems = [f"{where}: {problem}" for where, expr, legend in expressions for problem in check_promql(expr, legend)]
    assert not problems, "\n".join(problems)
    used = {series for _, expr, _ in expressions for series in METRIC.findall(STRING.sub('""', expr))}
    assert {"pipeq_queue_waiting_jobs", "pipeq_queue_held_jobs", "pipeq_jobs_finished_total"} <= used


@pytest.mark.parametrize(
    ("expr", "legend", "reported"),
    [
        ("sum(rate(pipeq_jobs_done_total[5m]))", "", "pipeq_jobs_done_total is not exported"),
        ("rate(pipeq_jobs_finished[5m])", "", "a counter: use _total"),
        ("histogram_quantile(0.5, rate(pipeq_job_latency_seconds[5m]))", "", "a histogram"),
        ('pipeq_queue_waiting_jobs{queue="gpu", model="x"}', "", "pipeq_queue_waiting_jobs has no label 'model'"),
        ("sum by (queue) (rate(pipeq_webhook_attempts_total[5m]))", "", "has no label 'queue' (sum by)"),
        ("sum(pipeq_loaded_model_bytes) by (queue)", "", "pipeq_loaded_model_bytes has no label 'queue'"),
        ("sum without (state) (pipeq_model_load_seconds_count)", "", "has no label 'state' (sum without)"),
        ("sum by (le) (rate(pipeq_job_run_seconds_count[5m]))", "", "pipeq_job_run_seconds_count has no label 'le'"),
        ("pipeq_queue_held_jobs and on (model) pipeq_queue_waiting_jobs", "", "has no label 'model' (on)"),
        ("label_values(pipeq_ingest_events_total, queue)", "", "label_values: pipeq_ingest_events_total has no"),
        ("label_values(pipeq_misspelt_total, queue)", "", "pipeq_misspelt_total is not exported"),
        ("sum by (queue) (pipeq_queue_waiting_jobs)", "{{model}}", "legend {{model}}"),
        ("sum(pipeq_worker_held_jobs)", "{{device}}", "legend {{device}}"),
    ],
)
def test_the_checker_refuses_wrong_queries(expr, legend, reported):
    problems = check_promql(expr, legend)
    assert any(reported in problem for problem in problems), problems


def test_the_checker_accepts_what_pipeq_exports():
    assert (
        check_promql(
            'histogram_quantile(0.9, sum by (le, model) (rate(pipeq_job_latency_seconds_bucket{queue="a"}[5m])))',
            "{{model}}",
        )
        == []
    )
    assert check_promql('sum(pipeq_worker_held_jobs{device="cpu"}) by (instance, device)', "{{instance}}") == []
    assert check_promql('label_values(pipeq_jobs_finished_total{queue=~"$queue"}, model)') == []
    assert check_promql('up{job="pipeq-workers"}', "{{job}}") == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed")
def test_every_expression_parses_with_promtool(tmp_path):
    """Prometheus's own parser on every expression, as recording rules (Grafana's variables replaced)."""
    grafana = {"$__rate_interval": "1m", "$__range": "1h", "$queue": ".*", "$model": ".*"}
    rules = []
    for index, (_, expr, _) in enumerate(all_expressions()):
        if match := LABEL_VALUES.match(expr.strip()):
            expr = match.group(1)
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"pipeq:check:{index}", "expr": expr})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _drain_bound(queues: list[str]) -> float:
    return drain_timeout(load_settings(EXAMPLE_CONFIG), queues)


def test_keda_scaled_objects_scale_on_the_backlog_and_wait_for_the_drain():
    settings = load_settings(EXAMPLE_CONFIG)
    triggers = list(keda_triggers())
    assert {re.search(r'queue="(\w+)"', t["metadata"]["query"]).group(1) for _, _, t in triggers} == set(
        settings.catalogue.queues()
    ), "one ScaledObject per catalogue queue"
    for path, scaled, trigger in triggers:
        metadata, spec = trigger["metadata"], scaled["spec"]
        queue = re.search(r'queue="(\w+)"', metadata["query"]).group(1)
        assert all(isinstance(value, str) for value in metadata.values()), f"{path.name}: KEDA metadata are strings"
        assert f'pipeq_queue_waiting_jobs{{queue="{queue}"}}' in metadata["query"]
        assert f'pipeq_queue_held_jobs{{queue="{queue}"}}' in metadata["query"]
        float(metadata["threshold"]), float(metadata["activationThreshold"])
        assert spec["cooldownPeriod"] > _drain_bound([queue]), f"{path.name}: cooldownPeriod within the drain bound"
        deployments = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Deployment"]
        (deployment,) = [d for d in deployments if d["metadata"]["name"] == spec["scaleTargetRef"]["name"]]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > _drain_bound([queue]), f"{path.name}: grace within the drain"
        (container,) = pod["containers"]
        args = container["args"]
        assert args[0] == "worker" and args[args.index("--queues") + 1] == queue and "--task-events" in args
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["PIPEQ_METRICS__HOST"] == "0.0.0.0" and env["PIPEQ_METRICS__PORT"] == METRICS_PORT
        assert container["readinessProbe"]["exec"]["command"] == ["pipeq", "health"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    by_queue = {re.search(r'queue="(\w+)"', t["metadata"]["query"]).group(1): s for _, s, t in triggers}
    assert by_queue["gpu"]["spec"]["minReplicaCount"] == 0


# -- compose, Prometheus and Grafana wiring ------------------------------------------------------------------


def _duration_s(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|us)", value):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return total


def _environment(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def _bind_mounts(service: dict) -> list[tuple[Path, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append(((ROOT / source).resolve(), target))
    return mounts


def test_every_json_and_yaml_under_deploy_parses():
    files = sorted(path for path in DEPLOY.rglob("*") if path.suffix in {".json", ".yml", ".yaml"})
    assert len(files) >= 7
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert [document for document in yaml.safe_load_all(path.read_text()) if document], path


def test_prometheus_scrapes_every_pipeq_service_on_its_metrics_port():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert len(jobs) == len(set(jobs)) and all(job.startswith("pipeq-") for job in jobs)
    scraped = set()
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                assert host in services, f"{job['job_name']}: {host} is not a compose service"
                environment = _environment(services[host])
                assert environment.get("PIPEQ_METRICS__PORT") == port, f"{host} serves no metrics on {port}"
                assert environment.get("PIPEQ_METRICS__HOST") == "0.0.0.0", f"{host}'s metrics are loopback-only"
                scraped.add(host)
    pipeq_services = {name for name, s in services.items() if (s.get("command") or [""])[0] in PIPEQ_PROCESSES}
    assert pipeq_services == scraped, "every long-running pipeq process is scraped"
    for name in pipeq_services:
        assert services[name]["healthcheck"]["test"] == ["CMD", "pipeq", "health"], name
    metrics = services["metrics"]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(_environment(metrics)), "no S3 keys for it"
    for name, service in services.items():
        command = service.get("command") or [""]
        if command[0] == "worker":
            assert "--task-events" in command, name
            queues = command[command.index("--queues") + 1].split(",")
            assert _duration_s(service["stop_grace_period"]) > _drain_bound(queues), f"{name}: grace within drain"


def test_prometheus_and_grafana_mount_files_that_exist():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    prometheus_mounts = dict((target, source) for source, target in _bind_mounts(services["prometheus"]))
    for source in prometheus_mounts.values():
        assert source.exists(), source
    assert prometheus_mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS
    for rule_file in yaml.safe_load(PROMETHEUS.read_text()).get("rule_files", []):
        assert prometheus_mounts[rule_file].is_file(), rule_file

    grafana_mounts = dict((target, source) for source, target in _bind_mounts(services["grafana"]))
    for source in grafana_mounts.values():
        assert source.exists(), source
    datasources = yaml.safe_load(
        (grafana_mounts["/etc/grafana/provisioning/datasources"] / "prometheus.yml").read_text()
    )
    (datasource,) = datasources["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services
    providers = yaml.safe_load((grafana_mounts["/etc/grafana/provisioning/dashboards"] / "pipeq.yml").read_text())
    for provider in providers["providers"]:
        folder = grafana_mounts[provider["options"]["path"]]
        assert DASHBOARD in folder.glob("*.json")
    uids = {
        node["datasource"]["uid"]
        for node in _walk(json.loads(DASHBOARD.read_text()))
        if "datasource" in node
        and isinstance(node["datasource"], dict)
        and node["datasource"].get("type") == "prometheus"
    }
    assert uids == {datasource["uid"]}, "the dashboard uses the provisioned datasource"
    home = _environment(services["grafana"]).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert grafana_mounts[str(Path(home).parent)] / Path(home).name == DASHBOARD
