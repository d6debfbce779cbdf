"""Decoded samples: in memory while small, in a mapped temporary file past the limit, read in chunks with about a
chunk resident."""

import gc
import mmap
import os

import numpy as np
import pytest

from pipeq.worker.samples import SampleSink, SpooledSamples

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


def mapping_of(array: np.ndarray) -> tuple[int, str] | None:
    """The inode and path of the file mapping that holds ``array``'s address (Linux's /proc/self/maps), if any."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            bounds, _, _, _, inode, *path = line.split(maxsplit=5)
            start, end = (int(bound, 16) for bound in bounds.split("-"))
            if start <= array.ctypes.data < end:
                return int(inode), (path[0].strip() if path else "")
    return None


def open_inodes() -> set[int]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            inodes.add(os.stat(f"/proc/self/fd/{fd}").st_ino)
        except OSError:  # closed meanwhile
            continue
    return inodes


def test_the_temporary_file_is_unlinked_and_lives_as_long_as_the_samples():
    samples = collect(pieces(MIB), spool_bytes=MIB)
    inode, path = mapping_of(samples)
    assert path.endswith("(deleted)")  # never visible on disk, gone with the process
    assert inode in open_inodes()  # the mapping's own descriptor
    view = samples[10:20]
    del samples
    gc.collect()
    assert inode in open_inodes()  # a view keeps it
    del view
    gc.collect()
    assert inode not in open_inodes()


def test_a_discarded_sink_closes_its_file():
    sink = SampleSink(spool_bytes=1024)
    sink.add(np.ones(1024, dtype=np.float32))
    file = sink._file
    assert file is not None and not file.closed
    sink.discard()
    assert file.closed and sink.count == 0 and sink.samples().shape == (0,)


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
