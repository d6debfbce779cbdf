"""Real media for tests: speech from espeak-ng, pictures from Pillow, corrupt files by truncation."""

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageDraw

SAMPLING_RATE = 16_000


def speech(text: str, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Mono float32 speech of ``text`` spoken by espeak-ng, resampled to ``sampling_rate``."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("espeak-ng is not installed: run `make test` (it installs it) or apt-get install it")
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "speech.wav"
        subprocess.run([binary, "-w", str(path), text], check=True, capture_output=True)
        samples, rate = soundfile.read(path, dtype="float32")
    if rate != sampling_rate:
        positions = np.arange(0, len(samples), rate / sampling_rate)
        samples = np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)
    return samples


def encode_audio(samples: np.ndarray, fmt: str, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """``samples`` as a WAV (16-bit), FLAC, OGG (Vorbis) or MP3 file."""
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sampling_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def repeated(samples: np.ndarray, fmt: str, subtype: str, minutes: float, **options: float) -> bytes:
    """``samples`` repeated to at least ``minutes``, encoded block by block (libsndfile crashes on one huge write)."""
    repeats = int(np.ceil(minutes * 60 * SAMPLING_RATE / len(samples)))
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", SAMPLING_RATE, 1, format=fmt, subtype=subtype, **options) as file:
        for _ in range(repeats):
            file.write(samples)
    return buffer.getvalue()


def picture(width: int = 64, height: int = 48, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A small picture with shapes, as PNG or JPEG bytes."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        draw.ellipse((x0, y0, x0 + width // 3, y0 + height // 3), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def truncated(data: bytes, keep: int = 40) -> bytes:
    """The first ``keep`` bytes of a real file: a corrupt file of the same type."""
    return data[:keep]


def video(frames: int = 8, width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A short MPEG-4 video of ``frames`` different pictures at 8 frames a second."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = Image.open(io.BytesIO(picture(width, height, seed=seed + i)))
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode(None))
    return buffer.getvalue()
