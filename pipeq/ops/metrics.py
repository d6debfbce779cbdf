"""Every Prometheus metric pipeq exports, in one place: names, help, labels and buckets.

Names follow Prometheus conventions: the ``pipeq_`` prefix, base units (seconds, bytes), ``_total`` on counters,
histograms for times and sizes. Labels are bounded: a model is a catalogue name, a queue a catalogue queue, a
device what the worker was pinned to, an outcome one of a fixed few. Never a job id, a URL or an object key.

Metrics live in prometheus_client's default registry, beside its process metrics (CPU, memory, open files).
Each process serves its own (:mod:`pipeq.ops.http`); a worker with several device children serves one port per
child, so no two processes share a time series.
"""

from prometheus_client import Counter, Gauge, Histogram

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
"""Buckets of durations, from a text classification to an hour of audio."""
JOBS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
"""Buckets of micro-batch sizes, in jobs (and inputs per pipeline call)."""
CALLS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)
"""Buckets of the pipeline calls one micro-batch became."""
BYTES = tuple(1024 * 4**n for n in range(11))
"""Buckets of sizes, 1 KiB to 1 GiB."""

JOB = ("model", "queue", "device")
"""The labels of a job's metrics: which model, on which queue, on which device."""

# -- model workers -------------------------------------------------------------------------------------------

jobs_finished = Counter(
    "pipeq_jobs_finished_total",
    "Jobs that reached a final state on this worker, by state (succeeded, failed, canceled, expired).",
    [*JOB, "state"],
)
job_queue_wait = Histogram(
    "pipeq_job_queue_wait_seconds",
    "Seconds from a job's submission to the start of the attempt that finished it.",
    JOB,
    buckets=SECONDS,
)
job_run = Histogram(
    "pipeq_job_run_seconds",
    "Seconds from the start of a job's attempt to its final record (fetch, decode, its micro-batch's calls).",
    JOB,
    buckets=SECONDS,
)
job_latency = Histogram(
    "pipeq_job_latency_seconds", "Seconds from a job's submission to its final record.", JOB, buckets=SECONDS
)
micro_batch_jobs = Histogram(
    "pipeq_micro_batch_jobs", "Jobs in one micro-batch handed to the model.", JOB, buckets=JOBS
)
micro_batch_calls = Histogram(
    "pipeq_micro_batch_pipeline_calls",
    "Pipeline calls one micro-batch became (sorted by size, split where the pipeline needs it).",
    JOB,
    buckets=CALLS,
)
pipeline_call = Histogram("pipeq_pipeline_call_seconds", "Seconds one pipeline call took.", JOB, buckets=SECONDS)
pipeline_call_inputs = Histogram(
    "pipeq_pipeline_call_inputs",
    "Inputs in one pipeline call: _sum / _count is the mean batch the model saw.",
    JOB,
    buckets=JOBS,
)
model_load = Histogram(
    "pipeq_model_load_seconds",
    "Seconds loading a model's pipeline took, by outcome (loaded, failed).",
    ["model", "device", "outcome"],
    buckets=SECONDS,
)
loaded_models = Gauge("pipeq_loaded_models", "Models this worker holds loaded.", ["device"])
loaded_model_bytes = Gauge(
    "pipeq_loaded_model_bytes", "Bytes of each model this worker holds loaded.", ["model", "device"]
)
accelerator_memory_allocated = Gauge(
    "pipeq_accelerator_memory_allocated_bytes",
    "Accelerator memory in use by tensors (torch.cuda.memory_allocated); absent on CPU workers.",
    ["device"],
)
accelerator_memory_reserved = Gauge(
    "pipeq_accelerator_memory_reserved_bytes",
    "Accelerator memory held by the caching allocator (torch.cuda.memory_reserved); absent on CPU workers.",
    ["device"],
)
media_fetch_bytes = Counter("pipeq_media_fetch_bytes_total", "Bytes of media fetched from object storage.", ["device"])
media_fetch = Histogram(
    "pipeq_media_fetch_seconds",
    "Seconds fetching one object took, by outcome (ok, failed).",
    ["device", "outcome"],
    buckets=SECONDS,
)
media_fetch_size = Histogram(
    "pipeq_media_fetch_object_bytes", "Size of each object fetched.", ["device"], buckets=BYTES
)
jobs_held = Gauge(
    "pipeq_worker_held_jobs",
    "Jobs this worker holds unacked: waiting for a micro-batch, being prepared, or running.",
    ["device"],
)
draining = Gauge("pipeq_worker_draining", "1 while this worker drains (stops taking jobs) before exiting.", ["device"])

# -- webhook worker ------------------------------------------------------------------------------------------

webhook_attempts = Counter(
    "pipeq_webhook_attempts_total",
    "Webhook delivery attempts by outcome: delivered, skipped (already delivered), waited (another delivery of it"
    " in flight: not an attempt), retried, failed (given up).",
    ["outcome"],
)
webhook_attempt = Histogram(
    "pipeq_webhook_attempt_seconds", "Seconds one webhook attempt took.", ["outcome"], buckets=SECONDS
)
webhook_dead_letters = Counter(
    "pipeq_webhook_dead_letters_total", "Webhook deliveries that gave up and landed in the dead-letter store."
)

# -- ingester ------------------------------------------------------------------------------------------------

ingest_events = Counter(
    "pipeq_ingest_events_total",
    "Objects and events reaching the ingester by source (redis_list, http, sqs, poll) and outcome: submitted,"
    " duplicate (an object version seen before), refused (not a valid job), unmatched (an event no rule matches),"
    " malformed (not a bucket notification).",
    ["source", "outcome"],
)

# -- backlog exporter (pipeq metrics): read from Redis at every scrape (pipeq.ops.backlog), so declared by name --

QUEUE_WAITING = ("pipeq_queue_waiting_jobs", "Jobs waiting in a queue, taken by no worker.")
QUEUE_HELD = ("pipeq_queue_held_jobs", "Jobs of a queue held by workers: prefetched, batching or running.")
QUEUE_OLDEST_AGE = (
    "pipeq_queue_oldest_waiting_age_seconds",
    "Age of the oldest job waiting in a queue (since it was sent to the queue); 0 when none waits.",
)
BACKLOG_UP = ("pipeq_backlog_up", "1 when this scrape read the backlog from Redis, 0 when Redis could not be read.")
BACKLOG_LABELS = {QUEUE_WAITING[0]: ("queue",), QUEUE_HELD[0]: ("queue",), QUEUE_OLDEST_AGE[0]: ("queue",)}
"""The labels of each backlog metric (pipeq_backlog_up has none)."""
