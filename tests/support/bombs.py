"""Small files that decode to far more than their size, or whose headers say more than they hold: what the
decoded-size limits are for."""

import io
import struct
import zlib

import av
import numpy as np
import soundfile


def wav(rate: int, samples: int) -> bytes:
    """A mono 16-bit WAV of ``samples`` quiet samples at ``rate`` Hz (44 bytes of header, 2 a sample): at 1 Hz,
    200 samples are 444 bytes that resample to 3.2 M samples at 16 kHz."""
    data = np.full(samples, 16, dtype="<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(chunks)) + chunks


def flac_declaring(seconds: float, holding: float = 1.0, rate: int = 16_000) -> bytes:
    """A FLAC file holding ``holding`` seconds of silence whose header (STREAMINFO) declares ``seconds``."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(holding * rate), np.float32), rate, format="FLAC")
    data = bytearray(buffer.getvalue())
    at = 4 + 4 + 10  # "fLaC", the block header, then block sizes and frame sizes: rate, channels, bits, samples
    fields = int.from_bytes(data[at : at + 8], "big")
    total = (1 << 36) - 1
    fields = (fields & ~total) | int(seconds * rate)
    data[at : at + 8] = fields.to_bytes(8, "big")
    return bytes(data)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` pixels and holding none: only its header can be read."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def flat_video(frames: int, width: int, height: int, rate: int = 8, fmt: str = "mp4") -> bytes:
    """An MPEG-4 video of ``frames`` black frames (quick to make at any size); matroska declares no frame count."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
        for _ in range(frames):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()
