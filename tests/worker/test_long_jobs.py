"""A long job through a real worker: an hour of speech transcribed in chunks reports its progress (the record,
``pipeq status --follow``, progress webhook events), is canceled mid-way and stops at its next chunk, and the worker
goes on to the next job. Its webhook is told started, progress and completed (canceled), numbered in order."""

import base64
import io
import json
import threading
import time
from typing import Any

import pytest
import redis

from devtools.media import repeated, speech
from pipeq.config.settings import Limits, Settings, Webhooks
from pipeq.producer import Client
from pipeq.producer.cli import follow
from pipeq.webhooks.delivery import Deliverer
from pipeq.webhooks.signing import verify
from pipeq.worker.app import create_app
from tests.support.receiver import Receiver
from tests.support.settings import model_name
from tests.support.waiting import wait_until
from tests.support.workers import worker_thread

pytestmark = pytest.mark.slow  # an hour of audio

ASR = "automatic-speech-recognition"
TEXT = "text-classification"
SECRET = "whsec_" + base64.b64encode(b"pipeq lifecycle tests, 32 bytes!").decode()
CHUNKING = {"chunk_length_s": 10, "stride_length_s": 2}
SENTENCE = "Long recordings are split into overlapping chunks of ten seconds. Each chunk is transcribed by the model."


@pytest.fixture
def long_settings(settings: Settings, redis_url: str, redis_db: int, s3) -> Settings:
    """The session's settings on a Redis pair of this test's own, with room for an hour of audio and signed
    webhooks to a receiver on loopback."""
    return settings.model_copy(
        update={
            "broker_url": f"{redis_url}/{redis_db}",
            "result_backend": f"{redis_url}/{redis_db + 1}",
            "limits": Limits(max_media_bytes=64 * 1024 * 1024),
            "webhooks": Webhooks(secret=SECRET, allow_private=True, timeout=5),
        }
    )


def queued_deliveries(settings: Settings) -> list[tuple[list, dict]]:
    """The delivery messages waiting on the webhooks queue (taken off it), as (args, kwargs), oldest first."""
    with redis.Redis.from_url(settings.broker_url) as broker:
        raw = broker.lrange(settings.webhooks.queue, 0, -1)
        broker.delete(settings.webhooks.queue)
    messages = [json.loads(item) for item in reversed(raw)]  # LPUSHed: the oldest is last
    return [tuple(json.loads(base64.b64decode(message["body"]))[:2]) for message in messages]


@pytest.mark.own_worker
def test_an_hour_of_speech_reports_progress_and_stops_at_the_next_chunk_when_canceled(long_settings, upload):
    hour = repeated(speech(SENTENCE), "OGG", "VORBIS", 60, compression_level=1.0)
    audio = upload(hour, ".ogg")
    client = Client(long_settings)
    lines = io.StringIO()
    with Receiver() as receiver, worker_thread(create_app(long_settings), hostname="long@tests") as worker:
        engine = worker.consumer.pipeq_engine
        long_job = client.submit(
            ASR,
            audio,
            model=model_name(ASR),
            parameters=CHUNKING,
            webhook=receiver.url,
            webhook_events=["started", "progress", "completed"],
        )
        next_job = client.submit(TEXT, "the job waiting behind the long one", model=model_name(TEXT))
        followed: dict[str, Any] = {}
        follower = threading.Thread(target=lambda: followed.update(record=follow(client, long_job, 600, lines)))
        follower.start()

        def under_way() -> bool:
            progress = client.status(long_job).progress
            return progress is not None and progress.fraction >= 0.05 and "running chunk" in lines.getvalue()

        wait_until(under_way, timeout=300, interval=0.2, message=lambda: str(client.status(long_job)))
        call = engine.watch.current
        assert call is not None and call.progress.chunks_total > 300  # an hour in 10 s chunks, 6 s apart
        began, before = time.monotonic(), call.progress.chunks_done
        canceled = client.cancel(long_job)
        wait_until(lambda: engine.watch.current is not call, timeout=60, interval=0.01)
        stopped_after_s, after = time.monotonic() - began, call.progress.chunks_done
        assert client.wait(next_job, timeout=60).state == "succeeded"
        follower.join(60)
        deliverer = Deliverer(long_settings)
        for args, kwargs in queued_deliveries(long_settings):
            assert args == [long_job]
            assert deliverer.attempt(long_job, None, kwargs["event"], kwargs["sequence"])

    chunk_s = (began - call.started) / before
    print(
        f"\none chunk took {chunk_s:.3f} s; the call stopped {stopped_after_s:.3f} s after the cancel, "
        f"{after - before} chunk(s) later, at chunk {after} of {call.progress.chunks_total}"
    )
    batch = long_settings.catalogue.models[model_name(ASR)].pipeline_batch_size
    assert after - before <= batch, "more than the one batch of chunks in hand ran after the cancel"
    assert after < call.progress.chunks_total
    record = client.status(long_job)
    assert record.state == canceled.state == "canceled"
    assert 0.05 <= record.progress.fraction < 1 and record.progress.detail.startswith("chunk ")

    assert followed["record"].state == "canceled"  # pipeq status --follow drew its bar and ended with the job
    drawn = lines.getvalue()
    assert "running chunk" in drawn and "canceled" in drawn, drawn

    bodies = [verify(request.headers, request.body, SECRET) for request in receiver.requests]
    events = [body["event"] for body in bodies]
    assert events[0] == "started" and events[-1] == "completed" and "progress" in events, events
    assert [body["sequence"] for body in bodies] == sorted({body["sequence"] for body in bodies})  # in order
    ids = [request.headers["webhook-id"] for request in receiver.requests]
    assert len(set(ids)) == len(ids) and ids[-1] == long_job and ids[0] == f"{long_job}:1"
    assert bodies[-1]["status"] == "canceled" and bodies[-1]["error"]["type"] == "Canceled"
    assert all(body["progress"]["detail"].startswith("chunk ") for body in bodies if body["event"] == "progress")
    client.close()
