# pipeq image: the `pipeq` command (producer CLI and device-pinned Celery worker).
#
#   CPU image (default):  docker build -t pipeq:cpu .
#   GPU image:            docker build -t pipeq:gpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#                         (PyPI's Linux torch wheels are CUDA builds; or a PyTorch CUDA index such as
#                         https://download.pytorch.org/whl/cu128 that publishes the pinned release. The CUDA
#                         wheels bundle the CUDA runtime: the host needs only the NVIDIA driver + container toolkit.)
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

# The project itself (`pip install .`; dependencies are already in place). The README.m[d] pattern copies
# README.md (pyproject's long description) when the context has one and matches nothing when it does not;
# pyproject.toml is listed again so the COPY always has a source.
COPY pyproject.toml README.m[d] ./
# One import root, pipeq: its subpackages pipeq.producer, pipeq.worker and pipeq.config come from these folders.
COPY pipeq ./pipeq
COPY producer ./producer
COPY worker ./worker
COPY config ./config
RUN pip install --no-deps . \
 && pipeq --help >/dev/null \
 && (cd / && python -c "from pipeq import Client; import pipeq.worker.app") \
 && rm -rf /tmp/pipeq-src

# Numeric uid:gid of the pipeq user, so that runtimes can tell it is not root (e.g. Kubernetes runAsNonRoot).
USER 1000:1000
WORKDIR /home/pipeq
VOLUME ["/models"]

ENTRYPOINT ["pipeq"]
CMD ["--help"]
