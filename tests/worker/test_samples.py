"""Decoded samples: in memory while small, in a mapped temporary file past the limit, read in chunks with about a
chunk resident."""

import gc
import mmap
import os

import numpy as np
import pytest

from worker.samples import SampleSink, SpooledSamples

MIB = 1024 * 1024


def pieces(total: int, size: int = 4096, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(min(size, total - start)).astype(np.float32) for start in range(0, total, size)]


def collect(parts: list[np.ndarray], spool_bytes: int) -> np.ndarray:
    sink = SampleSink(spool_bytes)
    for part in parts:
        sink.add(part)
    return sink.samples()


def resident_bytes(array: np.ndarray) -> int:
    """The resident size of the mapping that holds ``array`` (Linux's /proc/self/smaps)."""
    address = array.ctypes.data
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start, end = (int(bound, 16) for bound in head.split("-"))
                inside = start <= address < end
            elif inside and head == "Rss:":
                return int(line.split()[1]) * 1024
    raise AssertionError("the array's mapping is not in /proc/self/smaps")


def test_small_audio_stays_in_memory():
    parts = pieces(10_000)
    samples = collect(parts, spool_bytes=MIB)
    assert not isinstance(samples, np.memmap)
    assert np.array_equal(samples, np.concatenate(parts))


def test_audio_past_the_limit_is_spooled_to_a_file_and_reads_back_the_same():
    parts = pieces(MIB)  # 4 MiB of float32
    samples = collect(parts, spool_bytes=MIB)
    assert isinstance(samples, SpooledSamples)
    assert samples.dtype == np.float32 and samples.shape == (MIB,)
    assert np.array_equal(samples, np.concatenate(parts))
    assert not samples.flags.writeable


def test_the_temporary_file_lives_as_long_as_the_samples():
    before = set(os.listdir("/proc/self/fd"))
    samples = collect(pieces(MIB), spool_bytes=MIB)
    (held,) = set(os.listdir("/proc/self/fd")) - before  # the mapping's descriptor of the unlinked file
    assert os.readlink(f"/proc/self/fd/{held}").endswith("(deleted)")
    del samples
    gc.collect()
    assert set(os.listdir("/proc/self/fd")) == before


def test_a_discarded_sink_closes_its_file():
    sink = SampleSink(spool_bytes=1024)
    sink.add(np.ones(1024, dtype=np.float32))
    before = len(os.listdir("/proc/self/fd"))
    sink.discard()
    assert len(os.listdir("/proc/self/fd")) == before - 1


def test_empty_audio_is_an_empty_array():
    assert SampleSink().samples().shape == (0,)


@pytest.mark.parametrize("spooled", [True, False])
def test_reading_front_to_back_in_chunks_keeps_about_a_chunk_resident(tmp_path, spooled):
    """The pipeline's chunk_iter: slices of 10 s with 2 s strides, each copied by the feature extractor. A plain
    memory map would end with the whole file resident; spooled samples keep the current chunk."""
    total, chunk, step = 16 * MIB, MIB // 2, MIB // 2 - MIB // 8  # 64 MiB of samples, 2 MiB chunks
    path = tmp_path / "samples.f32"
    with open(path, "wb") as file:
        for part in pieces(total, size=MIB):
            file.write(memoryview(part))
    mapped = (SpooledSamples if spooled else np.memmap)(path, dtype=np.float32, mode="r", shape=(total,))
    expected = np.fromfile(path, dtype=np.float32)
    for start in range(0, total, step):
        assert np.array_equal(np.array(mapped[start : start + chunk]), expected[start : start + chunk])
    resident = resident_bytes(mapped)
    if spooled:
        assert resident <= 2 * chunk * 4 + mmap.PAGESIZE, f"{resident / MIB:.1f} MiB resident"
    else:  # the control: without giving pages back, all that was read stays mapped
        assert resident >= total * 4 * 0.9, f"{resident / MIB:.1f} MiB resident"
