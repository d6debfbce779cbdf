"""Speech recognition: pipeq against the in-process pipeline and a one-job-one-call worker, and an hour of audio.

One run, one random model (``--size``): a Wav2Vec2ForCTC of wav2vec2-base's shape ("base", 95 M parameters; layer
norm and an attention mask, so padded batches give single calls' results) or the tests' "tiny" one; or a Whisper of
one of OpenAI's checkpoint shapes ("whisper-tiny" to "whisper-large-v3", 1.6 B parameters) that decodes exactly
``--max-new-tokens`` tokens per clip (see devtools.tiny_whisper). The clips are real espeak-ng speech of
varied length (``--clips``, 1 to 20 s), stored as OGG in a local S3 server; in-process runs get the same clips
decoded. It measures clips/s for

* the in-process ``pipeline("automatic-speech-recognition")`` over the list at batch_size 1 and 8 (unsorted, as
  users call it) and over the length-sorted list at batch_size 8;
* a pipeq worker process (default micro-batching, or ``--batch-size``; media fetched from S3 and decoded by the
  worker);
* the same worker with ``max_batch_jobs = 1`` and ``batch_size = 1``: one job, one pipeline call;

and with ``--hour``, one hour of speech (OGG) transcribed in chunks (10 s; 30 s for Whisper) by a worker process,
with the worker's peak resident memory against the decoded samples' size.

``--device cuda:0 --dtype float16`` runs all of it on a GPU (in-process and worker alike).

    .venv/bin/python -m benchmarks.speech [--clips 48] [--size base|tiny|whisper-base|...] [--max-new-tokens 40]
        [--batch-size N] [--device cpu] [--dtype float32] [--hour]
"""

from devtools.local_services import isolate_environment, redis_server, s3_server

isolate_environment("bench")  # before transformers is imported

import argparse  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from benchmarks.throughput import (  # noqa: E402
    MODEL,
    cpu_seconds,
    other_cpu_seconds,
    pipeq_throughput,
    publish,
    timed,
    wait_ready,
    worker_process,
    write_config,
)
from devtools.media import SAMPLING_RATE, encode_audio, repeated, speech  # noqa: E402
from devtools.tiny_models import build_ctc_asr  # noqa: E402
from devtools.tiny_whisper import WHISPER_SHAPES, build_whisper  # noqa: E402
from pipeq.config.catalogue import ModelEntry  # noqa: E402
from pipeq.config.settings import load_settings  # noqa: E402
from pipeq.producer.client import Client  # noqa: E402
from pipeq.worker.decoding import decode_audio  # noqa: E402

TASK = "automatic-speech-recognition"
BUCKET = "bench"
_SENTENCES = [
    "The meeting starts at nine tomorrow morning.",
    "Please send the invoice to the accounting department before Friday.",
    "It rained all weekend, so we stayed inside and watched old films.",
    "Turn left at the second traffic light and the station is on your right.",
    "Our quarterly numbers were better than expected, mostly thanks to the new product line.",
    "Can you hear me now?",
    "The recording quality on this call is not great, but the message is clear enough to understand.",
    "Remember to water the plants while I am away.",
]


def make_clips(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` clips of espeak-ng speech, one to a few sentences each (about 1 to 20 s)."""
    rng = random.Random(seed)
    voiced = {sentence: speech(sentence) for sentence in _SENTENCES}
    clips = []
    for _ in range(count):
        parts = [voiced[rng.choice(_SENTENCES)] for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4]))]
        clips.append(np.concatenate(parts)[: 20 * SAMPLING_RATE])
    return clips


SIZES = ["base", "tiny", *(size for size in WHISPER_SHAPES if size.startswith("whisper-"))]


def build_model(path: Path, size: str, max_new_tokens: int) -> Path:
    """The random speech model of ``size`` (see the module's docstring), saved under ``path``."""
    if size.startswith("whisper-"):
        return build_whisper(path, size=size, max_new_tokens=max_new_tokens)
    return build_ctc_asr(path, size=size)


def in_process(model: Path, clips: list[np.ndarray], device: str, dtype: str) -> dict[str, Any]:
    """clips/s of the pipeline called directly: unsorted at batch_size 1 and 8, length-sorted at 8."""
    pipe = transformers.pipeline(TASK, model=str(model), device=device, dtype=getattr(torch, dtype))
    results: dict[str, Any] = {"parameters_m": sum(p.numel() for p in pipe.model.parameters()) / 1e6}
    inputs = [{"raw": clip, "sampling_rate": SAMPLING_RATE} for clip in clips]
    pipe([dict(item) for item in inputs[:8]], batch_size=8)  # warm-up
    by_length = sorted(inputs, key=lambda item: -len(item["raw"]))
    runs = {
        "bs1": lambda: pipe([dict(item) for item in inputs], batch_size=1),
        "bs8": lambda: pipe([dict(item) for item in inputs], batch_size=8),
        "sorted_bs8": lambda: pipe([dict(item) for item in by_length], batch_size=8),
    }
    for name, run in runs.items():
        seconds = timed(run)
        results[name] = {"items_per_s": len(clips) / seconds, "seconds": seconds}
        print(f"  in-process {name}: {len(clips) / seconds:.2f} clips/s", flush=True)
    return results


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc: not Linux?")


def one_hour(s3: Any, client: Client, process: Any, minutes: int, chunk_length_s: int) -> dict[str, Any]:
    """``minutes`` of speech as OGG in S3, transcribed in chunks; seconds and the worker's peak memory."""
    sentences = np.concatenate([speech(sentence) for sentence in _SENTENCES])
    print(f"  encoding {minutes} min of speech ...", flush=True)
    ogg = repeated(sentences, "OGG", "VORBIS", minutes)
    samples = len(decode_audio(ogg, SAMPLING_RATE))
    s3.put_object(Bucket=BUCKET, Key="hour.ogg", Body=ogg)
    before = peak_rss_bytes(process.pid)
    parameters = {"chunk_length_s": chunk_length_s, "stride_length_s": chunk_length_s / 5}
    start = time.perf_counter()
    record = client.wait(client.submit(TASK, f"s3://{BUCKET}/hour.ogg", model=MODEL, parameters=parameters), 3600)
    seconds = time.perf_counter() - start
    if record.state != "succeeded":
        raise RuntimeError(f"the hour failed: {record.error}")
    decoded = samples * 4  # float32
    peak = peak_rss_bytes(process.pid)
    return {
        "minutes": samples / SAMPLING_RATE / 60,
        "object_bytes": len(ogg),
        "decoded_bytes": decoded,
        "seconds": seconds,
        "peak_rss_before": before,
        "peak_rss_after": peak,
        "growth_over_decoded": (peak - before) / decoded,
    }


def report(results: dict[str, Any]) -> str:
    """The results as a table, with ratios."""
    inp, pq, naive = results["in_process"], results["pipeq"], results["one_job_one_call"]
    width = 50
    lines = [
        f"{results['clips']} clips, {results['audio_seconds']:.0f} s of speech (1-20 s each); model {results['size']} "
        f"({results['parameters_m']:.1f} M parameters) on {results['device']}, {results['dtype']}; "
        f"torch threads {results['torch_threads']}"
        + (f"; {results['max_new_tokens']} tokens decoded per clip" if "max_new_tokens" in results else ""),
        f"other processes used {results['other_cpu_seconds']:.1f} CPU-s during the run",
        "",
        f"{'':{width}}{'clips/s':>10}{'seconds':>10}",
    ]
    rows = [
        ("in-process pipeline, batch_size=1", inp["bs1"]),
        ("in-process pipeline, batch_size=8", inp["bs8"]),
        ("in-process, length-sorted, batch_size=8", inp["sorted_bs8"]),
        (f"pipeq worker, batch_size={results['pipeq_batch_size']} (S3 fetch + decode)", pq),
        ("one-job-one-call worker", naive),
    ]
    for name, row in rows:
        rate = row.get("items_per_s", row.get("jobs_per_s"))
        line = f"{name:{width}}{rate:>10.2f}{row['seconds']:>10.1f}"
        if "batches" in row:
            line += f"   {row['batches']} batches, mean jobs per micro-batch {row['mean_micro_batch_jobs']:.1f}"
        lines.append(line)
    best = max(("bs1", "bs8"), key=lambda key: inp[key]["items_per_s"])
    ratios = [
        (f"pipeq / best unsorted in-process ({best})", inp[best]["items_per_s"]),
        ("pipeq / sorted in-process bs=8", inp["sorted_bs8"]["items_per_s"]),
        ("pipeq / one-job-one-call worker", naive["jobs_per_s"]),
    ]
    lines += ["", *(f"{name:{width}}{pq['jobs_per_s'] / other:>9.2f}x" for name, other in ratios)]
    if "hour" in results:
        hour, mib = results["hour"], 1024 * 1024
        lines += [
            "",
            f"{hour['minutes']:.0f} min of speech: {hour['object_bytes'] / mib:.1f} MiB OGG, "
            f"{hour['decoded_bytes'] / mib:.0f} MiB decoded (float32, 16 kHz), transcribed in {hour['seconds']:.0f} s",
            f"worker peak RSS {hour['peak_rss_before'] / mib:.0f} MiB before, {hour['peak_rss_after'] / mib:.0f} MiB "
            f"after: grew by {hour['growth_over_decoded']:.2f}x the decoded samples",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--size", choices=SIZES, default="base")
    parser.add_argument("--batch-size", type=int, help="the pipeq worker's batch_size (default: the catalogue's)")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="tokens each clip decodes (Whisper sizes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--hour", action="store_true", help="also transcribe an hour of speech (--minutes)")
    parser.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args()

    clips = make_clips(args.clips)
    cpu_start = cpu_seconds()
    results: dict[str, Any] = {
        "clips": len(clips),
        "audio_seconds": sum(len(clip) for clip in clips) / SAMPLING_RATE,
        "size": args.size,
        "device": args.device,
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "pipeq_batch_size": args.batch_size
        or ModelEntry(name=MODEL, task=TASK).batch_size_on(args.device.split(":")[0]),
    }
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeq-bench-speech-")))
        print(f"building the {args.size} random speech model ...", flush=True)
        model = build_model(workdir / "model", args.size, args.max_new_tokens)
        print("in-process pipeline ...", flush=True)
        decoded = [decode_audio(encode_audio(c, "OGG"), SAMPLING_RATE) for c in clips]
        results["in_process"] = in_process(model, decoded, args.device, args.dtype)
        results["parameters_m"] = results["in_process"].pop("parameters_m")
        if args.size.startswith("whisper-"):
            results["max_new_tokens"] = args.max_new_tokens

        redis_url = stack.enter_context(redis_server())
        endpoint = stack.enter_context(s3_server())
        settings = {"s3_endpoint_url": endpoint, "s3_region": "us-east-1", "device": args.device}
        settings["limits"] = {"max_media_bytes": 256 * 1024 * 1024}
        settings["allowed_object_prefixes"] = [f"s3://{BUCKET}/"]
        s3 = None
        refs: list[str] = []
        pipeq_batching = {} if args.batch_size is None else {"pipeline_batch_size": args.batch_size}
        naive_batching = {"max_batch_jobs": 1, "pipeline_batch_size": 1}
        runs = (("pipeq", "speech", 0, pipeq_batching), ("one_job_one_call", "speech-naive", 2, naive_batching))
        for key, queue, db, batching in runs:
            print(f"{key} worker ...", flush=True)
            config = write_config(
                workdir / f"{queue}.toml", redis_url, db, model, queue, TASK, settings, dtype=args.dtype, **batching
            )
            log = workdir / f"{queue}.log"
            with worker_process(config, queue, log) as process:
                client = Client(load_settings(config))
                stack.callback(client.close)
                if s3 is None:
                    s3 = client.results.s3
                    s3.create_bucket(Bucket=BUCKET)
                    for i, clip in enumerate(clips):
                        s3.put_object(Bucket=BUCKET, Key=f"clip-{i}.ogg", Body=encode_audio(clip, "OGG"))
                        refs.append(f"s3://{BUCKET}/clip-{i}.ogg")
                wait_ready(client, process, log, refs[:8], TASK)
                results[key] = pipeq_throughput(client, refs, TASK)
                print(f"  {results[key]['jobs_per_s']:.2f} clips/s", flush=True)
                if key == "pipeq" and args.hour:
                    print("an hour of speech ...", flush=True)
                    chunk_length_s = 30 if args.size.startswith("whisper-") else 10
                    results["hour"] = one_hour(s3, client, process, args.minutes, chunk_length_s)
    results["other_cpu_seconds"] = other_cpu_seconds(cpu_start)
    publish(results, report(results), "speech.json")


if __name__ == "__main__":
    main()
