# Two commands for a newcomer: `make demo` and `make test`. Both set up what they need on first use.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
APT     := redis-server rabbitmq-server espeak-ng tesseract-ocr chromium chromium-driver curl
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-fast lint bench system-deps setup clean

demo: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m devtools.demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest

# The quick loop: everything but the tests marked slow (subprocess workers, the wheel, long media).
test-fast: setup
	$(VENV)/bin/ruff check .
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -m "not slow"

bench: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m benchmarks.throughput

setup: system-deps $(STAMP)

# Debian packages the tests and demo use (chromium: the console's browser tests; rabbitmq-server, in /usr/sbin: the
# RabbitMQ broker tests), installed only when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || missing="$$missing rabbitmq-server"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v tesseract >/dev/null || missing="$$missing tesseract-ocr"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# torch is pinned (the CPU wheel); a looser requirement could pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q "torch==2.13.0"
	$(VENV)/bin/pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .bench
