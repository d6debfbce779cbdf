"""Decoded audio samples: collected in memory or, for long audio, in a temporary file mapped back as an array.

An hour of 16 kHz audio is 220 MiB of float32 samples. Past ``spool_bytes`` the samples go to an anonymous
temporary file (in ``TMPDIR``) as they are decoded, and come back as a read-only :class:`SpooledSamples` array.
The speech pipeline reads long audio in chunks (``chunk_length_s``), front to back, so only the chunks it is
reading stay resident.
"""

import mmap
import tempfile
from typing import IO, Any

import numpy as np

_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # not on Windows: pages then stay mapped until the array goes
SPOOL_SAMPLE_BYTES = 32 * 1024 * 1024
"""Decoded audio larger than this (about 8.7 minutes at 16 kHz) is kept in a temporary file, not in memory."""


class SpooledSamples(np.memmap):
    """Samples mapped from a file. Slicing from a start gives the pages before that start back to the kernel (they
    stay on disk), so reading front to back in chunks, as the pipeline does, keeps about a chunk resident. A page
    read again is simply mapped again from the file: any order of reading gives the same samples."""

    def __getitem__(self, index: Any) -> Any:
        if _DONTNEED is not None and isinstance(index, slice) and isinstance(self.base, mmap.mmap):
            done = self.offset + max(index.start or 0, 0) * self.itemsize
            if (done := done - done % mmap.PAGESIZE) > 0:
                self.base.madvise(_DONTNEED, 0, done)
        return super().__getitem__(index)


class TooManySamples(Exception):
    """A piece would take a :class:`SampleSink` past its ``max_samples``."""


class SampleSink:
    """Collects mono float32 samples piece by piece: in memory up to ``spool_bytes``, then in a temporary file; at
    most ``max_samples`` of them (a piece that would go past raises TooManySamples, and is not kept)."""

    def __init__(self, spool_bytes: int = SPOOL_SAMPLE_BYTES, max_samples: int | None = None) -> None:
        self.spool_bytes = spool_bytes
        self.max_samples = max_samples
        self.count = 0
        self._pieces: list[np.ndarray] = []
        self._file: IO[bytes] | None = None

    def add(self, piece: np.ndarray) -> None:
        """Append ``piece`` (any shape, flattened) to the samples."""
        piece = np.ascontiguousarray(piece, dtype=np.float32).reshape(-1)
        if self.max_samples is not None and self.count + len(piece) > self.max_samples:
            raise TooManySamples(f"more than {self.max_samples} samples")
        self.count += len(piece)
        if self._file is None and self.count * piece.itemsize > self.spool_bytes:
            self._file = tempfile.TemporaryFile(prefix="pipeq-samples-")  # noqa: SIM115 (closed in samples/discard)
            for held in self._pieces:
                self._file.write(memoryview(held))
            self._pieces.clear()
        if self._file is not None:
            self._file.write(memoryview(piece))
        else:
            self._pieces.append(piece)

    def samples(self) -> np.ndarray:
        """All samples: an array in memory, or a :class:`SpooledSamples` whose file lives as long as the array."""
        if self._file is None:
            pieces, self._pieces = self._pieces, []
            return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        file, self._file = self._file, None
        try:
            file.flush()
            return SpooledSamples(file, dtype=np.float32, mode="r", shape=(self.count,))
        finally:
            file.close()  # the mapping keeps the (already unlinked) file until the array is gone

    def discard(self) -> None:
        """Drop what was collected (a decoding that failed half-way)."""
        self.count = 0
        self._pieces.clear()
        if self._file is not None:
            self._file.close()
            self._file = None
