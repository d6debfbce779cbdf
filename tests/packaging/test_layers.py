"""Imports point one way: config <- core <- ops <- {producer, worker, webhooks, ingest, api} <- cli.

Every ``import`` in pipeq's source, module level or inside a function, is read with ``ast``; a package may import
its own modules, any lower layer, and the few sideways edges listed here. Developer tooling, tests and
benchmarks are never imported, nor the old top-level names (``config``, ``worker``, ``producer``).
"""

import ast
import importlib.util
from collections.abc import Iterable
from pathlib import Path

LAYERS = {
    "pipeq.config": 0,
    "pipeq.core": 1,
    "pipeq.ops": 2,  # metrics, health, backlog: what every long-running process serves
    "pipeq.producer": 3,
    "pipeq.worker": 3,
    "pipeq.webhooks": 3,
    "pipeq.ingest": 3,
    "pipeq.api": 3,
    "pipeq.cli": 4,
}
SIDEWAYS = {
    ("pipeq.ingest", "pipeq.producer"),  # ingestion submits jobs through the client
    ("pipeq.api", "pipeq.producer"),  # the HTTP API submits, reads and cancels through the client
    ("pipeq.worker", "pipeq.webhooks"),  # a worker queues the deliveries of the jobs it finishes
}
FOREIGN = ("config", "worker", "producer", "devtools", "tests", "benchmarks")


def package_of(module: str) -> str | None:
    """The layered package ``module`` belongs to (``pipeq.worker.engine`` -> ``pipeq.worker``), or None."""
    parts = module.split(".")
    return ".".join(parts[:2]) if ".".join(parts[:2]) in LAYERS else None


def imported_modules(source: str, module: str) -> Iterable[str]:
    """Every module ``source`` (the text of ``module``) imports, relative imports resolved."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                yield ".".join([*base, node.module] if node.module else base)
            else:
                yield node.module or ""


def violations(sources: dict[str, str]) -> list[str]:
    """``importer -> imported`` for every import of ``sources`` (module name -> text) that breaks the layers."""
    found = []
    for module, source in sources.items():
        here = package_of(module)
        for target in imported_modules(source, module):
            if target.split(".")[0] in FOREIGN:
                found.append(f"{module} -> {target} (not part of the pipeq package)")
                continue
            there = package_of(target)
            if here is None or there is None or here == there or (here, there) in SIDEWAYS:
                continue
            if LAYERS[there] >= LAYERS[here]:
                found.append(f"{module} -> {target} ({here} may not import {there})")
    return found


def pipeq_sources() -> dict[str, str]:
    """Module name -> source text of every module of every layered package, wherever the package lives."""
    sources = {}
    for package in LAYERS:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, package
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join([package, *parts]).removesuffix(".__init__")
            sources[name] = path.read_text()
    return sources


def test_pipeq_imports_point_one_way():
    sources = pipeq_sources()
    assert {"pipeq.core.contract", "pipeq.worker.engine", "pipeq.cli.main"} <= set(sources)
    assert violations(sources) == []


def test_a_lower_layer_importing_a_higher_one_is_caught():
    sources = {
        "pipeq.core.records": "def f():\n    from pipeq.worker.engine import Engine\n",
        "pipeq.worker.engine": "import pipeq.cli\nfrom pipeq.core import records\n",
        "pipeq.producer.client": "from pipeq.worker import app\n",
        "pipeq.ingest.ingester": "from pipeq.producer.client import Client\n",
        "pipeq.config.settings": "from ..core import contract\nimport devtools.local_services\n",
    }
    assert violations(sources) == [
        "pipeq.core.records -> pipeq.worker.engine (pipeq.core may not import pipeq.worker)",
        "pipeq.worker.engine -> pipeq.cli (pipeq.worker may not import pipeq.cli)",
        "pipeq.producer.client -> pipeq.worker (pipeq.producer may not import pipeq.worker)",
        "pipeq.config.settings -> pipeq.core (pipeq.config may not import pipeq.core)",
        "pipeq.config.settings -> devtools.local_services (not part of the pipeq package)",
    ]
