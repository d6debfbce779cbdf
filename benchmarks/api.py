"""The HTTP API against the Python client: jobs/s submitted through one API process, and the latency it adds.

One run, a private redis-server, one API token (its rate limits and queued cap set far above what the run asks, so
authentication, the limits and the cap are paid for but never refuse). The API runs as its own process
(``pipeq api serve``, uvicorn, one worker), so the load generator does not share its GIL. It measures:

* submission throughput, no worker (every job stays queued), small text-classification jobs: ``--jobs`` of them
  one at a time, the Python client calling ``submit`` once per job (one thread, and ``--concurrency`` threads)
  against ``POST /v1/jobs`` of one job per request from ``--concurrency`` threads (an ``httpx.Client`` each,
  keep-alive); ``--bulk-jobs`` of them in bulk, the client's ``submit_requests`` of the whole list (chunks of
  1000) against ``POST /v1/jobs`` of lists of ``--list-size`` jobs from one client. jobs/s from the first request
  to the last answer, and the CPU the API process and this one used meanwhile (a CPU-bound API process sits near
  100%);
* the bare round trip, no worker, one request at a time, the two paths alternating (``--samples`` each):
  ``POST /v1/jobs`` (one job) against ``client.submit``, and ``GET /v1/jobs/{id}`` against ``client.status``;
* latency at light load: a real pipeq worker (a separate Celery process) serving a MiniLM-sized random model,
  ``--light-jobs`` jobs per path at ``--rate`` jobs/s in all, the paths alternating job by job on the same texts:
  ``client.submit`` then ``client.wait``, against ``POST /v1/jobs`` with ``Prefer: wait=30`` (its answer is the
  finished job); submit-to-result p50 and p99 of each, and the difference.

The model is built in ``.bench/model`` unless it holds one. The API's logs go to ``.bench/api-*.log``. Results
are printed and written to ``.bench/api.json``.

    .venv/bin/python -m benchmarks.api [--jobs 4000] [--bulk-jobs 20000] [--concurrency 8] [--list-size 100]
                                       [--samples 500] [--light-jobs 100] [--rate 10]
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from benchmarks.submit import requests, settings_for
from benchmarks.throughput import (
    BENCH,
    MODEL,
    ROOT,
    TASK,
    cpu_seconds,
    make_texts,
    percentiles,
    publish,
    wait_ready,
    worker_process,
    write_config,
)
from devtools import config_files
from devtools.local_services import free_port, isolate_environment, redis_server
from devtools.tiny_models import build_text_classification
from pipeq.api.tokens import new_token
from pipeq.config.api import Api, ApiToken
from pipeq.config.settings import load_settings
from pipeq.producer.client import Client

TOKEN_NAME = "bench"
WAIT_S = 30


def api_section(digest: str) -> dict[str, Any]:
    """The ``[api]`` settings: one token whose limits never refuse what this benchmark sends."""
    token = ApiToken(
        name=TOKEN_NAME, sha256=digest, jobs_per_s=1e9, burst=100_000, requests_per_s=1e9, max_queued=10**7
    )
    return Api(tokens=[token]).model_dump()


@contextmanager
def api_process(config: Path, log: Path) -> Iterator[tuple[str, psutil.Process]]:
    """``pipeq api serve`` in its own process, configured by ``config``, its output in ``log``; yields its base URL
    and the process once ``/readyz`` answers; stopped on exit."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPEQ_")}
    env["PIPEQ_CONFIG"] = str(config)
    command = [sys.executable, "-m", "pipeq.cli", "api", "serve", "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited with {process.returncode} (log {log}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer /readyz in 60 s (log {log}):\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield base, psutil.Process(process.pid)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def http_client(base: str, secret: str) -> httpx.Client:
    """A keep-alive HTTP client of the API, authenticated with the token ``secret``."""
    auth = {"Authorization": f"Bearer {secret}"}
    return httpx.Client(base_url=base, headers=auth, timeout=60, trust_env=False)  # loopback: never a proxy


def post(http: httpx.Client, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``POST /v1/jobs``; its JSON answer, RuntimeError unless 201."""
    response = http.post("/v1/jobs", json=body, headers=headers)
    if response.status_code != 201:
        raise RuntimeError(f"POST /v1/jobs answered {response.status_code}: {response.text[:500]}")
    return response.json()


def cpu(process: psutil.Process | None = None) -> float:
    """CPU seconds (user + system) ``process`` (default: this one) has used so far."""
    times = (process or psutil.Process()).cpu_times()
    return times.user + times.system


def family_cpu() -> float:
    """CPU seconds this process and its live descendants (redis-server, the API, the worker) have used so far."""
    total = cpu()
    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            total += cpu(child)
    return total


@contextmanager
def others_watched(results: dict[str, Any], phase: str) -> Iterator[None]:
    """Record in ``results["other_cpu_seconds"][phase]`` the CPU seconds processes outside this benchmark used
    during the block (anything else on these cores skews the numbers)."""
    machine, ours = cpu_seconds()[0], family_cpu()
    yield
    other = (cpu_seconds()[0] - machine) - (family_cpu() - ours)
    results.setdefault("other_cpu_seconds", {})[phase] = max(0.0, other)


def measured(run: Callable[[], Any], jobs: int, api: psutil.Process) -> dict[str, Any]:
    """jobs/s of ``run`` submitting ``jobs`` jobs, and the CPU the API process and this one used meanwhile (in %
    of one core)."""
    api_start, own_start, start = cpu(api), cpu(), time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return {
        "jobs_per_s": jobs / seconds,
        "seconds": seconds,
        "api_cpu_percent": 100 * (cpu(api) - api_start) / seconds,
        "bench_cpu_percent": 100 * (cpu() - own_start) / seconds,
    }


def in_threads(count: int, work: Callable[[int], None]) -> None:
    """``work(i)`` for i in 0..count-1, each in its own thread, started together; re-raises the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def submission(
    client: Client,
    base: str,
    secret: str,
    api: psutil.Process,
    jobs: int,
    bulk_jobs: int,
    concurrency: int,
    list_size: int,
) -> dict[str, Any]:
    """jobs/s of each way to submit jobs (no worker): ``jobs`` of them one per call, ``bulk_jobs`` in bulk; after
    a short warm-up of each."""
    work, bulk = list(requests(jobs)), list(requests(bulk_jobs))
    slices = [work[i::concurrency] for i in range(concurrency)]
    https = [http_client(base, secret) for _ in range(concurrency)]
    try:

        def client_single(part: list[dict] = work) -> None:
            for request in part:
                client.submit(request["task"], request["input"], model=request["model"])

        def api_single(i: int, part: list[dict] | None = None) -> None:
            for request in part if part is not None else slices[i]:
                post(https[i], request)

        def api_lists(part: list[dict] = bulk) -> None:
            for start in range(0, len(part), list_size):
                post(https[0], part[start : start + list_size])

        warm = work[:50]
        client_single(warm)
        client.submit_requests(warm)
        in_threads(concurrency, lambda i: api_single(i, warm[i::concurrency]))
        api_lists(bulk[: 2 * list_size])

        runs: dict[str, tuple[int, Callable[[], Any]]] = {
            "client_single": (jobs, client_single),
            "client_single_threads": (jobs, lambda: in_threads(concurrency, lambda i: client_single(slices[i]))),
            "client_chunked": (bulk_jobs, lambda: client.submit_requests(bulk)),
            "api_single": (jobs, lambda: in_threads(concurrency, api_single)),
            "api_lists": (bulk_jobs, api_lists),
        }
        results: dict[str, Any] = {}
        for name, (count, run) in runs.items():
            results[name] = measured(run, count, api)
            print(f"  {name}: {results[name]['jobs_per_s']:,.0f} jobs/s", flush=True)
        return results
    finally:
        for http in https:
            http.close()


def round_trips(client: Client, base: str, secret: str, samples: int) -> dict[str, Any]:
    """The bare round trip of each call, one at a time, the client's and the API's alternating (no worker): p50 and
    p99 of ``client.submit`` / ``POST /v1/jobs`` and of ``client.status`` / ``GET /v1/jobs/{id}``."""
    work = list(requests(samples))
    times: dict[str, list[float]] = {name: [] for name in ("submit", "post", "status", "get")}
    client_ids, api_ids = [], []
    with http_client(base, secret) as http:
        for request in work[:20]:  # warm-up
            post(http, request)
            client.submit(request["task"], request["input"], model=request["model"])
        for request in work:
            start = time.perf_counter()
            client_ids.append(client.submit(request["task"], request["input"], model=request["model"]))
            middle = time.perf_counter()
            api_ids.append(post(http, request)["id"])
            end = time.perf_counter()
            times["submit"].append(middle - start)
            times["post"].append(end - middle)
        for client_id, api_id in zip(client_ids, api_ids, strict=True):
            start = time.perf_counter()
            client.status(client_id)
            middle = time.perf_counter()
            response = http.get(f"/v1/jobs/{api_id}")
            end = time.perf_counter()
            if response.status_code != 200 or response.json()["state"] != "queued":
                raise RuntimeError(f"GET /v1/jobs/{api_id} answered {response.status_code}: {response.text[:500]}")
            times["status"].append(middle - start)
            times["get"].append(end - middle)
    return {"samples": samples, **{name: percentiles(values) for name, values in times.items()}}


def light_load(client: Client, base: str, secret: str, texts: list[str], rate: float) -> dict[str, Any]:
    """One job every 1/rate s, the client's path and the API's alternating on the same texts (job 2k by the client,
    2k+1 by the API, both text k); each job's submit-to-result latency and micro-batch size, and every job's
    [path, submitted at (s from the first), latency (ms), micro-batch jobs] in ``jobs``."""
    http = http_client(base, secret)

    def by_client(text: str) -> tuple[float, int]:
        start = time.perf_counter()
        record = client.wait(client.submit(TASK, text, model=MODEL), timeout=120)
        seconds = time.perf_counter() - start
        if record.state != "succeeded":
            raise RuntimeError(f"light-load job failed: {record.error}")
        return seconds, record.micro_batch_jobs or 0

    def by_api(text: str) -> tuple[float, int]:
        start = time.perf_counter()
        view = post(http, {"task": TASK, "input": text, "model": MODEL}, {"Prefer": f"wait={WAIT_S}"})
        seconds = time.perf_counter() - start
        if view["state"] != "succeeded":
            raise RuntimeError(f"light-load job by the API is {view['state']}, not succeeded: {view.get('error')}")
        return seconds, view["micro_batch_jobs"] or 0

    with http, ThreadPoolExecutor(max_workers=32) as pool:
        for text in texts[:5]:  # warm-up, both paths
            by_client(text)
            by_api(text)
        begin = time.perf_counter()
        futures = []
        for i in range(2 * len(texts)):
            time.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            futures.append(pool.submit(by_api if i % 2 else by_client, texts[i // 2]))
        done = [future.result() for future in futures]
    jobs = [
        ["api" if i % 2 else "client", round(i / rate, 3), round(seconds * 1e3, 2), size]
        for i, (seconds, size) in enumerate(done)
    ]
    client_p = percentiles([seconds for seconds, _ in done[0::2]])
    api_p = percentiles([seconds for seconds, _ in done[1::2]])
    return {
        "jobs_per_path": len(texts),
        "rate": rate,
        "mean_micro_batch_jobs": float(np.mean([size for _, size in done])),
        "client": client_p,
        "api": api_p,
        "added": {key: api_p[key] - client_p[key] for key in client_p},
        "jobs": jobs,
    }


def row(label: str, width: int, *values: str) -> str:
    return f"{label:{width}}" + "".join(f"{value:>10}" for value in values)


def report(results: dict[str, Any]) -> str:
    """The results as a table."""
    sub, trips, light, width = results["submission"], results["round_trips"], results["light"], 52
    k, size = results["concurrency"], results["list_size"]
    lines = [
        f"{os.cpu_count()} CPUs; one API process (uvicorn), token auth + rate limits + queued cap on;"
        f" {results['wall_seconds']:.0f} s in all",
        "other processes used "
        + ", ".join(f"{seconds:.1f} CPU-s in {phase}" for phase, seconds in results["other_cpu_seconds"].items())
        + " (should be near 0: anything else on these cores skews every number)",
        "",
        f"submission, no worker: {results['jobs']} jobs one per call, {results['bulk_jobs']} in bulk",
        row("", width, "jobs/s", "seconds", "API CPU%", "own CPU%"),
    ]
    names = {
        "client_single": "client.submit per job, 1 thread",
        "client_single_threads": f"client.submit per job, {k} threads",
        "client_chunked": "client.submit_requests (chunks of 1000)",
        "api_single": f"POST /v1/jobs one job, {k} concurrent clients",
        "api_lists": f"POST /v1/jobs lists of {size}, 1 client",
    }
    for key, label in names.items():
        run = sub[key]
        lines.append(
            row(
                label,
                width,
                f"{run['jobs_per_s']:,.0f}",
                f"{run['seconds']:.2f}",
                f"{run['api_cpu_percent']:.0f}",
                f"{run['bench_cpu_percent']:.0f}",
            )
        )
    ratios = [
        ("API one job / client.submit (1 thread)", "api_single", "client_single"),
        (f"API one job / client.submit ({k} threads)", "api_single", "client_single_threads"),
        (f"API lists of {size} / client.submit_requests", "api_lists", "client_chunked"),
    ]
    lines += ["", *(f"{label:{width}}{sub[a]['jobs_per_s'] / sub[b]['jobs_per_s']:>9.3f}x" for label, a, b in ratios)]
    lines += ["", f"bare round trip, no worker, one call at a time: {trips['samples']} each, alternating"]
    lines.append(row("", width, "p50 ms", "p99 ms"))
    pairs = [
        ("client.submit", "POST /v1/jobs (one job)", "submit", "post"),
        ("client.status", "GET /v1/jobs/{id}", "status", "get"),
    ]
    for client_label, api_label, client_key, api_key in pairs:
        c, a = trips[client_key], trips[api_key]
        lines += [
            row(client_label, width, f"{c['p50_ms']:.2f}", f"{c['p99_ms']:.2f}"),
            row(api_label, width, f"{a['p50_ms']:.2f}", f"{a['p99_ms']:.2f}"),
            row("  API - client", width, f"{a['p50_ms'] - c['p50_ms']:+.2f}", f"{a['p99_ms'] - c['p99_ms']:+.2f}"),
        ]
    lines += [
        "",
        f"light load, a worker on the MiniLM-sized model: {light['jobs_per_path']} jobs per path at {light['rate']:g}/s"
        f" in all, alternating; mean jobs per micro-batch {light['mean_micro_batch_jobs']:.2f}",
        row("submit-to-result latency", width, "p50 ms", "p99 ms"),
    ]
    for key, label in (("client", "client.submit + client.wait"), ("api", f"POST /v1/jobs, Prefer: wait={WAIT_S}")):
        lines.append(row(label, width, f"{light[key]['p50_ms']:.1f}", f"{light[key]['p99_ms']:.1f}"))
    added = light["added"]
    lines.append(row("  added by the API (API - client)", width, f"{added['p50_ms']:+.1f}", f"{added['p99_ms']:+.1f}"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4000, help="jobs in each one-job-per-call throughput run")
    parser.add_argument("--bulk-jobs", type=int, default=20_000, help="jobs in each bulk throughput run")
    parser.add_argument("--concurrency", type=int, default=8, help="HTTP clients (threads) posting one job each")
    parser.add_argument("--list-size", type=int, default=100, help="jobs per POST in the list run (at most 1000)")
    parser.add_argument("--samples", type=int, default=500, help="calls of each kind in the bare round trips")
    parser.add_argument("--light-jobs", type=int, default=100, help="light-load jobs per path (client, API)")
    parser.add_argument("--rate", type=float, default=10.0, help="light-load jobs/s, both paths together")
    args = parser.parse_args()
    if not 1 <= args.list_size <= 1000:
        parser.error("--list-size is 1 to 1000")
    if args.concurrency < 1 or args.jobs < 50 or args.bulk_jobs < 2 * args.list_size:
        parser.error("--concurrency must be at least 1, --jobs at least 50, --bulk-jobs at least twice --list-size")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on SIGTERM too
    isolate_environment("bench")  # the API's S3 client finds credentials at once (never used)
    BENCH.mkdir(exist_ok=True)
    secret, digest = new_token()
    wall_start = time.perf_counter()
    results: dict[str, Any] = {key: getattr(args, key) for key in ("jobs", "bulk_jobs", "concurrency", "list_size")}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeq-bench-api-")))
        redis_url = stack.enter_context(redis_server())

        print("submission, no worker ...", flush=True)
        settings = settings_for(redis_url).model_copy(update={"api": Api.model_validate(api_section(digest))})
        config = config_files.write_config(settings, workdir / "submit.toml")
        client = Client(load_settings(config))
        stack.callback(client.close)
        with api_process(config, BENCH / "api-submit.log") as (base, api):
            with others_watched(results, "submission"):
                results["submission"] = submission(
                    client, base, secret, api, args.jobs, args.bulk_jobs, args.concurrency, args.list_size
                )
            print("bare round trips ...", flush=True)
            with others_watched(results, "round_trips"):
                results["round_trips"] = round_trips(client, base, secret, args.samples)

        model = BENCH / "model"
        if not (model / "config.json").is_file():
            print(f"building the MiniLM-sized random model in {model} ...", flush=True)
            build_text_classification(model, size="minilm")
        print("light load, with a worker ...", flush=True)
        config = write_config(
            workdir / "light.toml", redis_url, 2, model, "bench", settings={"api": api_section(digest)}
        )
        texts = make_texts(args.light_jobs, seed=1)
        log = BENCH / "api-worker.log"
        client = Client(load_settings(config))
        stack.callback(client.close)
        with worker_process(config, "bench", log) as worker:
            wait_ready(client, worker, log, texts[:16])
            with api_process(config, BENCH / "api-light.log") as (base, _), others_watched(results, "light"):
                results["light"] = light_load(client, base, secret, texts, args.rate)
    results["wall_seconds"] = time.perf_counter() - wall_start
    publish(results, report(results), "api.json")


if __name__ == "__main__":
    main()
