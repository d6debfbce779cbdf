"""Long audio: ten minutes of real speech spooled from object storage, decoded into a mapped temporary file in
bounded memory, transcribed in chunks with timestamps; chunks of several jobs share the model's batches."""

import tracemalloc

import numpy as np
import pytest

from devtools.media import SAMPLING_RATE, encode_audio, repeated, speech
from pipeq.config.tasks import TASKS
from pipeq.core.contract import ObjectInput
from pipeq.worker.decoding import Decoded, decode_audio
from pipeq.worker.media import MediaFetcher, release
from pipeq.worker.runner import run_group
from pipeq.worker.samples import SpooledSamples
from tests.support.compare import same
from tests.support.settings import MAX_MEDIA_BYTES

pytestmark = pytest.mark.slow  # a worker in a subprocess, or minutes of media

ASR = "automatic-speech-recognition"
MINUTES = 10
SENTENCE = (
    "Long recordings are split into overlapping chunks of ten seconds. Each chunk is transcribed by the model, "
    "and the pieces are stitched together using the strides."
)


@pytest.fixture(scope="module")
def sentence() -> np.ndarray:
    return speech(SENTENCE)


def test_a_large_object_is_spooled_to_a_file_and_decoded_in_bounded_memory(sentence, s3, upload):
    """Neither the object nor its samples sit in memory: the peak is the sink's in-memory limit, not the samples."""
    flac = repeated(sentence, "FLAC", "PCM_16", MINUTES)
    fetcher = MediaFetcher(s3, max_bytes=64 * 1024 * 1024, spool_bytes=1024 * 1024)
    try:
        spooled = fetcher.fetch(ObjectInput(uri=upload(flac, ".flac")))
    finally:
        fetcher.close()
    assert not isinstance(spooled, bytes), "a large object must not be held in memory"
    spool_samples = 2 * 1024 * 1024
    tracemalloc.start()
    try:
        samples = decode_audio(spooled, SAMPLING_RATE, spool_bytes=spool_samples)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        release(spooled)
    assert spooled.closed
    assert isinstance(samples, SpooledSamples)
    assert len(samples) / SAMPLING_RATE >= MINUTES * 60
    assert peak < spool_samples + 4 * 1024 * 1024 < samples.nbytes / 4, f"decoding peaked at {peak / 2**20:.1f} MiB"
    assert np.array_equal(samples, decode_audio(flac, SAMPLING_RATE, spool_bytes=samples.nbytes + 1))


def test_a_spooled_object_over_the_limit_is_refused(sentence, s3, upload):
    from pipeq.worker.errors import MediaTooLarge

    data = repeated(sentence[: SAMPLING_RATE * 5], "WAV", "PCM_16", MINUTES)
    fetcher = MediaFetcher(s3, max_bytes=len(data) - 1, spool_bytes=1024 * 1024)
    try:
        with pytest.raises(MediaTooLarge):
            fetcher.fetch(ObjectInput(uri=upload(data, ".wav")))
    finally:
        fetcher.close()


def test_ten_minutes_of_speech_are_transcribed_in_chunks_with_timestamps(sentence, worker, client, upload, reference):
    """Ten minutes from object storage through the worker, in 10 s chunks with 2 s strides, word timestamps: the
    same transcript as the pipeline's on the same samples."""
    ogg = repeated(sentence, "OGG", "VORBIS", MINUTES, compression_level=1.0)
    assert len(ogg) <= MAX_MEDIA_BYTES
    parameters = {"chunk_length_s": 10, "stride_length_s": 2, "return_timestamps": "word"}
    job = client.submit(ASR, upload(ogg, ".ogg"), model=f"tiny-{ASR}", parameters=parameters)
    record = client.wait(job, timeout=300)
    assert record.state == "succeeded", record.error
    expected = reference(ASR)({"raw": decode_audio(ogg, SAMPLING_RATE), "sampling_rate": SAMPLING_RATE}, **parameters)
    assert same(record.result, expected)
    chunks = record.result["chunks"]
    ends = [chunk["timestamp"][1] for chunk in chunks]
    assert ends == sorted(ends)  # stitched in order across the chunk boundaries
    assert MINUTES * 60 * 0.5 < ends[-1] <= MINUTES * 60 + len(sentence) / SAMPLING_RATE  # spans the recording


@pytest.mark.parametrize("timestamps", ["word", "char"])
def test_chunked_speech_gets_timestamps(sentence, worker, client, upload, timestamps):
    """Timestamps on a shorter clip: the random tiny model emits thousands of words a minute to align."""
    clip = encode_audio(np.tile(sentence, 3), "OGG")
    parameters = {"chunk_length_s": 10, "stride_length_s": 2, "return_timestamps": timestamps}
    job = client.submit(ASR, upload(clip, ".ogg"), model=f"tiny-{ASR}", parameters=parameters)
    record = client.wait(job, timeout=120)
    assert record.state == "succeeded", record.error
    for chunk in record.result["chunks"]:
        start, end = chunk["timestamp"]
        assert 0 <= start <= end <= 3 * len(sentence) / SAMPLING_RATE + 1


def test_chunked_jobs_in_one_micro_batch_match_the_pipeline_alone(reference):
    """Without an attention mask, padded chunks would change results: each job then gets its own call."""
    pipe = reference(ASR)
    items = [speech(SENTENCE), speech(SENTENCE.upper() + " And once more, slowly.")]
    parameters = {"chunk_length_s": 10, "stride_length_s": 2, "return_timestamps": "word"}
    alone = [pipe({"raw": raw, "sampling_rate": SAMPLING_RATE}, **parameters) for raw in items]
    decoded = [Decoded({"raw": raw, "sampling_rate": SAMPLING_RATE}, len(raw) / SAMPLING_RATE) for raw in items]
    together = run_group(pipe, TASKS[ASR], parameters, 8, decoded)
    assert all(same(result, expected) for result, expected in zip(together, alone, strict=True))
