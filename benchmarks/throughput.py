"""Throughput and latency of pipeq against calling a transformers pipeline in-process, side by side.

One run, one model (a MiniLM-sized random BertForSequenceClassification with the real MiniLM tokenizer), one
seeded set of review-like English texts whose lengths follow a skewed, log-normal-ish distribution (most short,
a few up to ~300 words). It measures:

* in-process ``pipeline("text-classification")`` over the list at batch_size 1, 8 and 32 (unsorted, as users
  call it), over the length-sorted list at batch_size 16, and cut in ``max_batch_jobs``-item chunks each sorted by
  length (pipeq's own micro-batching without the queue, so "pipeq / that" is the cost of the queue): items/s;
* a pipeq worker (a separate ``celery -A pipeq.worker.app worker`` process, default micro-batching) fed all the jobs at
  once with ``Client.submit_many`` / ``wait_many``: jobs/s from first submit to last result;
* the same worker fed the same jobs with mixed priorities (:data:`MIXED_PRIORITIES`: 10% high, 10% low, the
  rest normal), printed beside the plain run; their ratio (what priorities cost) compares the median jobs/s of
  ``--priority-rounds`` pairs of runs, mixed and plain in alternating order, so that warming up favours neither;
* the same worker with ``max_batch_jobs = 1`` and ``batch_size = 1``: one job, one pipeline call;
* the pipeq worker again with a private RabbitMQ as its broker (records in Redis; ``--no-rabbitmq`` skips it): jobs/s
  and light-load latency, beside the Redis figures;
* light load: jobs submitted one at a time at ``--rate`` jobs/s, each job's submit-to-result latency measured
  by the client, against the in-process time of the same text at batch size 1 (queue overhead = the difference);
* the cost of being observed: two pipeq workers side by side, one plain, one with its metrics endpoint on (scraped
  every second, fifteen times Prometheus's default rate) and Celery task events on (a receiver counts them),
  fed the same jobs in alternating rounds (``--observed-rounds``); the ratio of their median jobs/s.

torch keeps its default thread count everywhere; in the pipeq runs the client and redis-server share the same
cores as the worker, which is the honest comparison; CPU time used by other processes during the run is reported
because it skews every number. The model is built in a temporary directory unless ``.bench/model`` holds one.
Results are printed and written to ``.bench/results.json``.

    .venv/bin/python -m benchmarks.throughput [--jobs 1000] [--light-jobs 100] [--rate 10]
"""

import os

from devtools.local_services import free_port, isolate_environment, rabbitmq_server, redis_server

isolate_environment()  # before transformers is imported

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from contextlib import ExitStack, contextmanager, suppress  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from celery import Celery  # noqa: E402

from devtools import config_files  # noqa: E402
from devtools.tiny_models import build_text_classification  # noqa: E402
from pipeq.config.catalogue import ModelEntry  # noqa: E402
from pipeq.config.settings import Settings, load_settings  # noqa: E402
from pipeq.config.tasks import TASKS  # noqa: E402
from pipeq.producer.client import Client  # noqa: E402
from pipeq.worker.decoding import Decoded  # noqa: E402
from pipeq.worker.runner import run_group  # noqa: E402

MIXED_PRIORITIES = ("high", *["normal"] * 8, "low")
"""The priorities of the mixed-priority run, job by job in turn: 10% high, 10% low, the rest normal."""
ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
TASK = "text-classification"
MODEL = "bench"

_SLOTS: dict[str, list[str]] = {
    name: words.split("|")
    for name, words in {
        "noun": "blender|headphones|jacket|coffee maker|phone case|backpack|novel|hotel room|app|keyboard|vacuum|tent"
        "|charger|screen|battery|mattress|printer|speaker",
        "adj": "great|terrible|solid|flimsy|comfortable|noisy|reliable|disappointing|excellent|cheap|overpriced"
        "|sturdy|beautiful|awkward|fast|slow|decent|mediocre|perfect",
        "adv": "really|quite|absolutely|barely|fairly|incredibly|somewhat|totally|pretty",
        "verb": "works|feels|looks|sounds|performs|holds up|charges|fits|runs",
        "person": "wife|husband|son|daughter|roommate|boss|neighbor|dad|mom",
        "rec": "definitely|not|probably|happily",
        "agree": "totally agree|kind of agree|do not agree at all",
    }.items()
}
_TEMPLATES = [
    "I bought this {noun} last month and it {verb} {adv} well.",
    "The {noun} is {adv} {adj}, but the {noun2} is {adj2}.",
    "Customer support was {adj} when I asked them about the {noun}.",
    "I would {rec} recommend it to anyone looking for a {adj} {noun}.",
    "Shipping took {n} days and the box was {adj2} when it arrived.",
    "After {n} weeks the {noun} still {verb} {adv} {adj}.",
    "My {person} thinks it is {adj}, and I {agree}.",
    "Compared to my old {noun}, this one {verb} {adv} {adj}.",
    "Honestly the price is {adj} for what you get.",
    "Five stars.",
    "Would not buy again.",
    "{adj}!",
    "Update: the {noun} stopped working after {n} days, so I am {adv} annoyed.",
    "The instructions were {adj2} and setting it up took about {n} minutes.",
]


def make_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` review-like texts; word counts log-normal (median ~20) clipped to 5..300."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        target = min(300, max(5, round(rng.lognormvariate(np.log(20), 0.9))))
        words: list[str] = []
        while len(words) < target:
            slots = {name: rng.choice(options) for name, options in _SLOTS.items()}
            slots.update(noun2=rng.choice(_SLOTS["noun"]), adj2=rng.choice(_SLOTS["adj"]), n=str(rng.randint(2, 30)))
            sentence = rng.choice(_TEMPLATES).format(**slots)
            words.extend(sentence.split())
        text = " ".join(words[:target])
        texts.append(text[0].upper() + text[1:] + ("" if text[-1] in ".!?" else "."))
    return texts


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p99 in milliseconds."""
    return {"p50_ms": float(np.percentile(values, 50)) * 1e3, "p99_ms": float(np.percentile(values, 99)) * 1e3}


def in_process(model: Path, texts: list[str], light: list[str], chunk: int, chunk_bs: int) -> dict[str, Any]:
    """items/s of the pipeline called directly, and per-text model time of the light-load texts at bs=1.

    Besides what users do (unsorted lists, a globally length-sorted list), it runs pipeq's own batching without
    the queue: the list cut in ``chunk``-item micro-batches, each run through ``worker.runner.run_group``.
    """
    pipe = transformers.pipeline(TASK, model=str(model))
    pipe(texts[:32], batch_size=8)  # warm-up

    def by_length(part: list[str]) -> list[str]:
        lengths = [len(ids) for ids in pipe.tokenizer(part)["input_ids"]]
        return [part[i] for i in sorted(range(len(part)), key=lambda i: -lengths[i])]

    def pipeq_batching(part: list[str]) -> list[Any]:
        return run_group(pipe, TASKS[TASK], {}, chunk_bs, [Decoded(text, float(len(text))) for text in part])

    runs: dict[str, Callable[[], Any]] = {f"bs{bs}": lambda bs=bs: pipe(texts, batch_size=bs) for bs in (1, 8, 32)}
    runs["sorted_bs16"] = lambda: pipe(by_length(texts), batch_size=16)
    runs["chunked"] = lambda: [pipeq_batching(texts[i : i + chunk]) for i in range(0, len(texts), chunk)]
    results: dict[str, Any] = {}
    for name, run in runs.items():
        seconds = timed(run)
        results[name] = {"items_per_s": len(texts) / seconds, "seconds": seconds}
        print(f"  in-process {name}: {len(texts) / seconds:.1f} items/s", flush=True)
    results["light_model_seconds"] = [timed(lambda t=text: pipe(t)) for text in light]
    return results


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used since boot by the whole machine, and by this process and its waited-for children."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split()[1:8]]
    machine = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    mine = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return machine, sum(usage.ru_utime + usage.ru_stime for usage in mine)


def other_cpu_seconds(since: tuple[float, float]) -> float:
    """CPU seconds the machine's other processes used since ``since`` (a :func:`cpu_seconds` reading)."""
    (machine_end, mine_end), (machine_start, mine_start) = cpu_seconds(), since
    return max(0.0, (machine_end - machine_start) - (mine_end - mine_start))


def publish(results: dict[str, Any], table: str, name: str) -> None:
    """Print ``table`` and write ``results`` to ``.bench/<name>``."""
    print()
    print(table)
    BENCH.mkdir(exist_ok=True)
    (BENCH / name).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {BENCH / name}")


def write_config(
    path: Path,
    redis_url: str,
    db: int,
    model: Path,
    queue: str,
    task: str = TASK,
    settings: dict[str, Any] | None = None,
    **entry: Any,
) -> Path:
    """A PIPEQ_CONFIG file: private Redis (broker db ``db``, records ``db + 1``), other ``settings``, and one
    catalogue entry serving ``task`` with the ``entry`` fields given (max_batch_jobs, pipeline_batch_size, ...)."""
    served = ModelEntry(name=MODEL, id=str(model), task=task, queue=queue, **entry)
    values = {"broker_url": f"{redis_url}/{db}", "result_backend": f"{redis_url}/{db + 1}", "models": [served]}
    config = Settings(**{**values, **(settings or {})})
    return config_files.write_config(config, path)


@contextmanager
def worker_process(
    config: Path, queue: str, log: Path, options: tuple[str, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A pipeq.worker.app worker`` in its own process, configured by ``config``, with further Celery
    ``options``; stopped on exit."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIPEQ_")}
    env["PIPEQ_CONFIG"] = str(config)
    base = f"-A pipeq.worker.app worker -Q {queue} -P solo --without-gossip --without-mingle --loglevel=WARNING"
    command = [sys.executable, "-m", "celery", *base.split(), *options, "-n", f"{queue}@%h"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()  # warm shutdown: the engine finishes its batch
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(
    client: Client, process: subprocess.Popen[bytes], log: Path, inputs: list[Any], task: str = TASK
) -> None:
    """Block until the worker has loaded the model and answered a warm-up batch."""
    ids = client.submit_many(task, inputs, model=MODEL)
    deadline = time.monotonic() + 300
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            records = client.wait_many(ids, timeout=2)
            break
        except TimeoutError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker answered nothing in 300 s:\n{log.read_text()[-3000:]}") from None
    if any(record.state != "succeeded" for record in records.values()):
        raise RuntimeError(f"warm-up jobs failed: {[r.error for r in records.values() if r.error]}")


def pipeq_throughput(
    client: Client, inputs: list[Any], task: str = TASK, priorities: tuple[str, ...] = ("normal",), **parameters: Any
) -> dict[str, Any]:
    """All jobs submitted at once, with ``priorities`` job by job in turn; jobs/s from the first submit to the last
    result, plus how they were batched."""
    start = time.perf_counter()
    jobs = [
        client.make_job(task, item, model=MODEL, parameters=parameters or None, priority=priority)
        for item, priority in zip(inputs, itertools.cycle(priorities), strict=False)
    ]
    ids = client.enqueue(jobs)
    submitted = time.perf_counter()
    records = list(client.wait_many(ids, timeout=3600).values())
    seconds = time.perf_counter() - start
    failed = [record for record in records if record.state != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} job(s) failed, e.g. {failed[0].error}")
    jobs = len(inputs)
    started = [record.started_at for record in records if record.started_at]
    finished = [record.finished_at for record in records if record.finished_at]
    return {
        "jobs_per_s": jobs / seconds,
        "seconds": seconds,
        "submit_seconds": submitted - start,
        "batches": len(set(started)),  # a batch's jobs share one started_at
        "mean_micro_batch_jobs": float(np.mean([record.micro_batch_jobs or 0 for record in records])),
        "worker_span_seconds": (max(finished) - min(started)).total_seconds(),
    }


def priorities_cost(client: Client, texts: list[str], plain: dict[str, Any], rounds: int) -> dict[str, Any]:
    """After the ``plain`` run, ``rounds`` pairs of runs, mixed priorities and plain in alternating order (mixed
    first in the first pair, so warm-up favours neither); the first mixed run's figures, every round's jobs/s and the
    ratio of the mixed rounds' median to the plain rounds' median (the ``plain`` run included)."""
    plain_rates, mixed_runs = [plain["jobs_per_s"]], []
    for pair in range(rounds):
        for kind in ("mixed", "plain") if pair % 2 == 0 else ("plain", "mixed"):
            if kind == "mixed":
                mixed_runs.append(pipeq_throughput(client, texts, priorities=MIXED_PRIORITIES))
            else:
                plain_rates.append(pipeq_throughput(client, texts)["jobs_per_s"])
    mixed_rates = [run["jobs_per_s"] for run in mixed_runs]
    ratio = float(np.median(mixed_rates) / np.median(plain_rates))
    return {
        **mixed_runs[0],
        "plain_rounds_jobs_per_s": plain_rates,
        "mixed_rounds_jobs_per_s": mixed_rates,
        "ratio": ratio,
    }


def on_rabbitmq(
    stack: ExitStack,
    workdir: Path,
    redis_url: str,
    model: Path,
    texts: list[str],
    light: list[str],
    rate: float,
    batching: dict[str, Any],
) -> dict[str, Any]:
    """The pipeq worker run again with a private RabbitMQ as its broker (records still in Redis): the throughput
    run and the light-load latency."""
    amqp_url = stack.enter_context(rabbitmq_server())
    queue = "bench-amqp"
    config = write_config(
        workdir / f"{queue}.toml", redis_url, 4, model, queue, settings={"broker_url": amqp_url}, **batching
    )
    log = workdir / f"{queue}.log"
    with worker_process(config, queue, log) as process:
        client = Client(load_settings(config))
        stack.callback(client.close)
        wait_ready(client, process, log, texts[:16])
        run = pipeq_throughput(client, texts)
        latencies, _ = light_load(client, light, rate)
    return {**run, "light_latency": percentiles(latencies)}


def light_load(client: Client, texts: list[str], rate: float) -> tuple[list[float], list[int]]:
    """Submit one job every 1/rate s; each job's submit-to-result latency as the client sees it, and batch size."""
    latencies = [0.0] * len(texts)
    batch_sizes = [0] * len(texts)

    def one(i: int) -> None:
        start = time.perf_counter()
        record = client.wait(client.submit(TASK, texts[i], model=MODEL), timeout=120)
        latencies[i] = time.perf_counter() - start
        batch_sizes[i] = record.micro_batch_jobs or 0
        if record.state != "succeeded":
            raise RuntimeError(f"light-load job failed: {record.error}")

    with ThreadPoolExecutor(max_workers=32) as pool:
        begin = time.perf_counter()
        futures = []
        for i in range(len(texts)):
            time.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            futures.append(pool.submit(one, i))
        for future in futures:
            future.result()
    return latencies, batch_sizes


class Observer:
    """What watches the observed worker: a scrape of its metrics every second, and a Celery event receiver that
    counts its task events (as Flower would)."""

    def __init__(self, metrics_url: str, broker_url: str) -> None:
        self.scrapes = 0
        self.events = 0
        self._stop = threading.Event()
        self._app = Celery(broker=broker_url, set_as_current=False)
        self._threads = [threading.Thread(target=loop, daemon=True) for loop in (self._scrape, self._receive)]
        self._url = metrics_url
        for thread in self._threads:
            thread.start()

    def _scrape(self) -> None:
        while not self._stop.wait(1.0):
            with suppress(httpx.HTTPError):
                httpx.get(self._url, timeout=5).raise_for_status()
                self.scrapes += 1

    def _receive(self) -> None:
        def count(event: dict[str, Any]) -> None:
            self.events += event["type"].startswith("task-")

        with self._app.connection_for_read() as connection:
            receiver = self._app.events.Receiver(connection, handlers={"*": count})
            while not self._stop.is_set():
                with suppress(TimeoutError, OSError):
                    receiver.capture(limit=None, timeout=1, wakeup=False)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)


def observed_cost(
    workdir: Path, redis_url: str, model: Path, texts: list[str], overrides: dict[str, Any], rounds: int
) -> dict[str, Any]:
    """A plain and an observed pipeq worker fed the same jobs in alternating rounds; their jobs/s."""
    port = free_port()
    plain_config = write_config(workdir / "plain.toml", redis_url, 4, model, "plain", **overrides)
    observed_settings = {"metrics": {"port": port, "host": "127.0.0.1"}}
    observed_config = write_config(
        workdir / "observed.toml", redis_url, 6, model, "observed", settings=observed_settings, **overrides
    )
    runs: dict[str, list[float]] = {"plain": [], "observed": []}
    with ExitStack() as stack:
        clients = {}
        for name, config, options in (("plain", plain_config, ()), ("observed", observed_config, ("-E",))):
            log = workdir / f"{name}.log"
            process = stack.enter_context(worker_process(config, name, log, options))
            clients[name] = Client(load_settings(config))
            stack.callback(clients[name].close)
            wait_ready(clients[name], process, log, texts[:16])
        observer = Observer(f"http://127.0.0.1:{port}/metrics", clients["observed"].settings.broker_url)
        stack.callback(observer.close)
        for i in range(rounds):
            for name in ("plain", "observed") if i % 2 == 0 else ("observed", "plain"):
                runs[name].append(pipeq_throughput(clients[name], texts)["jobs_per_s"])
                print(f"  round {i + 1}, {name}: {runs[name][-1]:.1f} jobs/s", flush=True)
        time.sleep(1.5)  # the last events on their way
        watched = {"scrapes": observer.scrapes, "task_events": observer.events}
    median = {name: float(np.median(values)) for name, values in runs.items()}
    return {"rounds": rounds, "jobs_per_s": runs, "median_jobs_per_s": median, **watched}


def report(results: dict[str, Any]) -> str:
    """The results as a table."""
    inp, pq, naive, light = results["in_process"], results["pipeq"], results["one_job_one_call"], results["light"]
    best = max(("bs1", "bs8", "bs32"), key=lambda key: inp[key]["items_per_s"])
    t, width = results["texts"], 48
    lines = [
        f"{t['count']} texts: words median {t['words_p50']:.0f}, p90 {t['words_p90']:.0f}, max {t['words_max']}; "
        f"tokens mean {t['tokens_mean']:.0f}, max {t['tokens_max']}; torch threads {results['torch_threads']}, "
        f"{os.cpu_count()} CPUs; pipeq worker: {results['pipeq_batching']}",
        f"other processes used {results['other_cpu_seconds']:.1f} CPU-s during the {results['wall_seconds']:.0f} s run"
        " (should be near 0: anything else on these cores skews every number)",
        "",
        f"{'':{width}}{'items/s':>10}{'seconds':>10}",
    ]
    rows = [
        ("in-process pipeline, batch_size=1", inp["bs1"]),
        ("in-process pipeline, batch_size=8", inp["bs8"]),
        ("in-process pipeline, batch_size=32", inp["bs32"]),
        ("in-process, length-sorted, batch_size=16", inp["sorted_bs16"]),
        (f"in-process, pipeq's batching in {results['chunk']}-item chunks", inp["chunked"]),
        ("pipeq worker", pq),
        ("pipeq worker, mixed priorities (10% high, 10% low)", results["pipeq_mixed_priorities"]),
        ("one-job-one-call worker (1 job, bs=1)", naive),
        *(
            [("pipeq worker on RabbitMQ (records in Redis)", results["pipeq_rabbitmq"])]
            if "pipeq_rabbitmq" in results
            else []
        ),
    ]
    for name, row in rows:
        line = f"{name:{width}}{row.get('items_per_s', row.get('jobs_per_s')):>10.1f}{row['seconds']:>10.1f}"
        if "batches" in row:
            line += (
                f"   {row['batches']} batches, mean jobs per micro-batch {row['mean_micro_batch_jobs']:.1f}, "
                f"worker span {row['worker_span_seconds']:.1f} s"
            )
        lines.append(line)
    ratios = [
        (f"pipeq / best unsorted in-process ({best})", inp[best]["items_per_s"]),
        ("pipeq / sorted in-process bs=16", inp["sorted_bs16"]["items_per_s"]),
        ("pipeq / one-job-one-call worker", naive["jobs_per_s"]),
        ("pipeq / its own chunking in-process (queue cost)", inp["chunked"]["items_per_s"]),
    ]
    lines += ["", *(f"{name:{width}}{pq['jobs_per_s'] / other:>9.2f}x" for name, other in ratios)]
    mixed = results["pipeq_mixed_priorities"]
    rounds = f"{len(mixed['mixed_rounds_jobs_per_s'])}+{len(mixed['plain_rounds_jobs_per_s'])} rounds"
    lines += [f"{f'pipeq with mixed priorities / pipeq ({rounds})':{width}}{mixed['ratio']:>9.3f}x", ""]
    lines.append(
        f"light load: {light['jobs']} jobs at {light['rate']}/s, "
        f"mean jobs per micro-batch {light['mean_micro_batch_jobs']:.2f}"
    )
    lines.append(f"{'':{width}}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("latency", "model_time", "overhead"):
        label = {"model_time": "model time alone (in-process, bs=1)", "overhead": "queue overhead (latency - model)"}
        p50, p99 = light[name]["p50_ms"], light[name]["p99_ms"]
        lines.append(f"{label.get(name, 'submit-to-result latency'):{width}}{p50:>10.1f}{p99:>10.1f}")
    if "pipeq_rabbitmq" in results:
        amqp = results["pipeq_rabbitmq"]
        p50, p99 = amqp["light_latency"]["p50_ms"], amqp["light_latency"]["p99_ms"]
        lines.append(f"{'submit-to-result latency, on RabbitMQ':{width}}{p50:>10.1f}{p99:>10.1f}")
        lines.append(
            f"{'pipeq on RabbitMQ / pipeq on Redis (jobs/s)':{width}}{amqp['jobs_per_s'] / pq['jobs_per_s']:>9.2f}x"
        )
    if "observed" in results:
        observed = results["observed"]
        median = observed["median_jobs_per_s"]
        lines += [
            "",
            f"observed: metrics scraped every second ({observed['scrapes']} scrapes), task events on"
            f" ({observed['task_events']} received); {observed['rounds']} alternating rounds each",
            f"{'pipeq worker, median jobs/s':{width}}{median['plain']:>10.1f}",
            f"{'pipeq worker observed, median jobs/s':{width}}{median['observed']:>10.1f}",
            f"{'observed / plain':{width}}{median['observed'] / median['plain']:>9.3f}x",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="texts in the throughput runs")
    parser.add_argument("--light-jobs", type=int, default=100, help="jobs in the light-load run")
    parser.add_argument("--rate", type=float, default=10.0, help="jobs/s in the light-load run")
    parser.add_argument("--max-batch-jobs", type=int, help="the pipeq worker's max_batch_jobs")
    parser.add_argument("--max-wait-s", type=float, help="the pipeq worker's max_wait_s")
    parser.add_argument("--pipeline-batch-size", type=int, help="the pipeq worker's pipeline_batch_size")
    parser.add_argument(
        "--observed-rounds", type=int, default=3, help="rounds of the observed-cost comparison (0: skip it)"
    )
    parser.add_argument(
        "--priority-rounds", type=int, default=3, help="pairs of runs (mixed priorities, plain) in that comparison"
    )
    parser.add_argument(
        "--no-rabbitmq", dest="rabbitmq", action="store_false", help="skip the pipeq worker on RabbitMQ run"
    )
    args = parser.parse_args()
    if args.priority_rounds < 1:
        parser.error("--priority-rounds must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on SIGTERM too

    texts = make_texts(args.jobs)
    light = make_texts(args.light_jobs, seed=1)
    knobs = ("max_batch_jobs", "max_wait_s", "pipeline_batch_size")
    overrides = {key: value for key, value in vars(args).items() if key in knobs and value is not None}
    entry = ModelEntry(name=MODEL, task=TASK, **overrides)  # the worker's settings, defaults included
    chunk, chunk_bs, flush = entry.max_batch_jobs, entry.batch_size_on("cpu"), entry.max_wait_s
    cpu_start, wall_start = cpu_seconds(), time.perf_counter()
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeq-bench-")))
        model = BENCH / "model"
        if not (model / "config.json").is_file():
            print("building the MiniLM-sized random model ...", flush=True)
            model = build_text_classification(workdir / "model", size="minilm")
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model))
        tokens = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        words = [len(text.split()) for text in texts]
        results: dict[str, Any] = {
            "texts": {
                "count": len(texts),
                "words_p50": float(np.median(words)),
                "words_p90": float(np.percentile(words, 90)),
                "words_max": max(words),
                "tokens_mean": float(np.mean(tokens)),
                "tokens_max": max(tokens),
            },
            "torch_threads": torch.get_num_threads(),
            "chunk": chunk,
            "chunk_bs": chunk_bs,
            "pipeq_batching": f"max_batch_jobs={chunk}, pipeline_batch_size={chunk_bs}, max_wait_s={flush}",
        }
        print("in-process pipeline ...", flush=True)
        results["in_process"] = in_process(model, texts, light, chunk, chunk_bs)
        model_seconds = results["in_process"].pop("light_model_seconds")

        redis_url = stack.enter_context(redis_server())
        runs = (
            ("pipeq", "bench", 0, overrides),
            ("one_job_one_call", "bench-naive", 2, {"max_batch_jobs": 1, "pipeline_batch_size": 1}),
        )
        for key, queue, db, batching in runs:
            print(f"{key} worker ...", flush=True)
            config = write_config(workdir / f"{queue}.toml", redis_url, db, model, queue, **batching)
            log = workdir / f"{queue}.log"
            with worker_process(config, queue, log) as process:
                client = Client(load_settings(config))
                stack.callback(client.close)
                wait_ready(client, process, log, texts[:16])
                results[key] = pipeq_throughput(client, texts)
                print(f"  {results[key]['jobs_per_s']:.1f} jobs/s", flush=True)
                if key == "pipeq":
                    print("pipeq worker, mixed priorities ...", flush=True)
                    mixed = priorities_cost(client, texts, results[key], args.priority_rounds)
                    results["pipeq_mixed_priorities"] = mixed
                    rates = ", ".join(f"{rate:.1f}" for rate in mixed["mixed_rounds_jobs_per_s"])
                    plain_rates = ", ".join(f"{rate:.1f}" for rate in mixed["plain_rounds_jobs_per_s"])
                    print(f"  mixed {rates} jobs/s; plain {plain_rates}", flush=True)
                    print("light load ...", flush=True)
                    latencies, sizes = light_load(client, light, args.rate)
                    overhead = [lat - alone for lat, alone in zip(latencies, model_seconds, strict=True)]
                    results["light"] = {
                        "jobs": len(light),
                        "rate": args.rate,
                        "mean_micro_batch_jobs": float(np.mean(sizes)),
                        "latency": percentiles(latencies),
                        "model_time": percentiles(model_seconds),
                        "overhead": percentiles(overhead),
                    }
        if args.rabbitmq:
            print("pipeq worker on RabbitMQ ...", flush=True)
            results["pipeq_rabbitmq"] = on_rabbitmq(
                stack, workdir, redis_url, model, texts, light, args.rate, overrides
            )
            print(f"  {results['pipeq_rabbitmq']['jobs_per_s']:.1f} jobs/s", flush=True)
        if args.observed_rounds:
            print("observed vs plain worker ...", flush=True)
            results["observed"] = observed_cost(workdir, redis_url, model, texts, overrides, args.observed_rounds)
    results["wall_seconds"] = time.perf_counter() - wall_start
    results["other_cpu_seconds"] = other_cpu_seconds(cpu_start)
    publish(results, report(results), "results.json")


if __name__ == "__main__":
    main()
