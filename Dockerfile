# pipeq image: the `pipeq` command (producer CLI and device-pinned Celery worker).
#
#   CPU image (default):  docker build -t pipeq:cpu .
#   GPU image:            docker build -t pipeq:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#                         (any CUDA wheel index that publishes the pinned torch release; the CUDA wheels
#                         bundle the CUDA runtime, the host only needs the NVIDIA driver + container toolkit)
#
# No Debian packages beyond the base image: PyAV wheels bundle ffmpeg, soundfile wheels bundle libsndfile,
# torch wheels bundle their own OpenMP/CUDA libraries.
FROM python:3.11-slim

# Where pip fetches torch from. The CPU index keeps the image small; point it at a CUDA index for GPU images.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HF_HOME=/models

# Non-root runtime user; /models (the Hugging Face cache) is created owned by it so that a fresh named
# volume mounted there inherits that ownership and the worker can download models into it.
RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin pipeq \
 && install -d -o pipeq -g pipeq /models

WORKDIR /tmp/pipeq-src

# Dependencies first, read from pyproject.toml so the pins live in one place, in their own layers so that a
# source change does not re-download torch. torch (pinned there, torch==2.13.0) comes from TORCH_INDEX_URL;
# the rest from PyPI, where the already-installed torch (e.g. 2.13.0+cpu) satisfies the ==2.13.0 pin.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
open('/tmp/torch.txt', 'w').write(''.join(d + '\n' for d in deps if d.replace(' ', '').startswith('torch='))); \
open('/tmp/deps.txt', 'w').write(''.join(d + '\n' for d in deps))" \
 && grep -q '^torch==' /tmp/torch.txt \
 && pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt \
 && pip install -r /tmp/deps.txt \
 && rm -f /tmp/torch.txt /tmp/deps.txt

# The project itself (`pip install .`; dependencies are already in place). README.m[d] copies README.md
# when present and is skipped when not (pyproject names it as the long description).
COPY README.m[d] ./
COPY pipeq ./pipeq
COPY producer ./producer
COPY worker ./worker
COPY config ./config
RUN pip install --no-deps . \
 && cd / && rm -rf /tmp/pipeq-src \
 && pipeq --help >/dev/null

USER pipeq
WORKDIR /home/pipeq
VOLUME ["/models"]

ENTRYPOINT ["pipeq"]
CMD ["--help"]
