"""Loading catalogue models as transformers pipelines and keeping them warm, within a memory bound.

A model goes on the worker's device, or on one of its visible GPUs (``devices = [i]``), or is spread by
accelerate (``device_map="auto"``) over several GPUs and the host when ``devices`` lists several or
``max_memory`` is set. ``quantization`` loads 8-bit or 4-bit weights through bitsandbytes (CUDA only).
"""

import gc
import importlib.util
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from pipeq.config.catalogue import ModelEntry
from pipeq.worker.errors import ModelUnavailable
from pipeq.worker.generation_caps import cap_default_length
from pipeq.worker.memory import free_accelerator_memory, pipeline_bytes

log = logging.getLogger(__name__)


def check_can_load(entries: Iterable[ModelEntry], device: str) -> None:
    """Refuse, at worker start, catalogue entries this worker's device cannot serve (ValueError saying why)."""
    problems = [problem for entry in entries if (problem := _placement_problem(entry, device))]
    if problems:
        raise ValueError("; ".join(problems))


def _placement_problem(entry: ModelEntry, device: str) -> str | None:
    on_cuda = device.startswith("cuda")
    if entry.quantization and not on_cuda:
        return (
            f"model {entry.name} asks for {entry.quantization} quantization, which needs CUDA (bitsandbytes); "
            f"this worker runs on {device}: serve it from a GPU worker's queue"
        )
    if entry.quantization and importlib.util.find_spec("bitsandbytes") is None:
        return (
            f"model {entry.name} asks for {entry.quantization} quantization, which needs the bitsandbytes "
            "package, and it is not installed: pip install bitsandbytes"
        )
    gpus = list(entry.devices or []) + [int(key) for key in entry.max_memory or {} if key.isdigit()]
    if gpus and not on_cuda:
        return f"model {entry.name} asks for GPUs {sorted(set(gpus))}; this worker runs on {device}"
    if gpus and max(gpus) >= (visible := _visible_gpu_count()):
        return (
            f"model {entry.name} asks for GPUs {sorted(set(gpus))}, but this worker sees {visible} "
            "(start it with --device cuda:A,B,... to give it several)"
        )
    return None


def _visible_gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def placement(entry: ModelEntry, device: str) -> dict[str, Any]:
    """Where ``transformers.pipeline`` puts the model: ``device=...`` or ``device_map`` (+ ``max_memory``)."""
    target = f"cuda:{entry.devices[0]}" if entry.devices and device.startswith("cuda") else device
    if not entry.sharded():
        # bitsandbytes weights cannot be moved after loading: place them while loading instead.
        return {"device_map": {"": target}} if entry.quantization else {"device": target}
    if entry.max_memory is not None:
        max_memory = {int(key) if key.isdigit() else key: size for key, size in entry.max_memory.items()}
        return {"device_map": "auto", "max_memory": max_memory}
    return {"device_map": "auto", "max_memory": _free_gpu_memory(entry.devices or [])}


def _free_gpu_memory(devices: list[int]) -> dict[int, int]:
    """Free bytes on each of ``devices``: confines ``device_map="auto"`` to those GPUs."""
    import torch

    return {index: torch.cuda.mem_get_info(index)[0] for index in devices}


def quantization_config(entry: ModelEntry, dtype: Any) -> Any:
    """The ``BitsAndBytesConfig`` for the entry's quantization, or None."""
    if entry.quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if entry.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = dtype if dtype != "auto" else None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute)


def load_pipeline(entry: ModelEntry, device: str) -> Any:
    """``transformers.pipeline`` for a catalogue entry on ``device`` (Hub id or local path, pinned revision)."""
    import torch
    import transformers

    dtype: Any = entry.dtype if entry.dtype == "auto" else getattr(torch, entry.dtype)
    where = placement(entry, device)
    model_kwargs = {"max_memory": where.pop("max_memory")} if "max_memory" in where else {}
    if (quantization := quantization_config(entry, dtype)) is not None:
        model_kwargs["quantization_config"] = quantization
    log.info("loading %s (%s, %s) on %s", entry.name, entry.id, entry.task, where)
    try:
        pipe = transformers.pipeline(
            entry.task,
            model=entry.id,
            revision=entry.revision,
            dtype=dtype,
            trust_remote_code=entry.trust_remote_code,
            model_kwargs=model_kwargs,
            **where,
        )
    except (OSError, ValueError, ImportError) as exc:
        raise ModelUnavailable(f"model {entry.name} ({entry.id}) could not be loaded: {exc}") from None
    return cap_default_length(pipe, entry)  # jobs naming no length: at most caps.max_new_tokens


class PipelineCache:
    """Pipelines by catalogue model, loaded on first use and kept, least recently used leaving first when
    keeping a new one would make them hold more than ``max_bytes`` (None: keep every one)."""

    def __init__(
        self,
        device: str,
        max_bytes: int | None = None,
        loader: Callable[[ModelEntry, str], Any] = load_pipeline,
        on_load: Callable[[ModelEntry, float, bool], None] = lambda entry, seconds, ok: None,
    ) -> None:
        self.device = device
        self.max_bytes = max_bytes
        self._loader = loader
        self.on_load = on_load
        """Told of every load: the entry, the seconds it took, whether it worked (after the cache is updated)."""
        self._pipelines: OrderedDict[str, Any] = OrderedDict()  # least recently used first
        self._sizes: dict[str, int] = {}  # bytes of every model loaded so far, kept or not
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry) -> Any:
        """The pipeline for ``entry``, loading it if needed (ModelUnavailable if it cannot be)."""
        began = time.monotonic()
        try:
            pipe, loaded = self._get_or_load(entry)
        except BaseException:
            self.on_load(entry, time.monotonic() - began, False)
            raise
        if loaded:
            self.on_load(entry, time.monotonic() - began, True)
        return pipe

    def _get_or_load(self, entry: ModelEntry) -> tuple[Any, bool]:
        """The pipeline for ``entry``, and whether it was loaded now."""
        with self._lock:
            if entry.name in self._pipelines:
                self._pipelines.move_to_end(entry.name)
                return self._pipelines[entry.name], False
            self._make_room(self._sizes.get(entry.name, 0))
            pipe = self._pipelines[entry.name] = self._loader(entry, self.device)
            self._sizes[entry.name] = size = pipeline_bytes(pipe)
            self._make_room(0)
            if self.max_bytes is not None and size > self.max_bytes:
                log.warning(
                    "model %s takes %d bytes, more than the cache's %d: kept alone", entry.name, size, self.max_bytes
                )
            # A model brings millions of long-lived objects; leave them out of every future garbage
            # collection, whose full passes would otherwise stall the batches that trigger them.
            gc.collect()
            gc.freeze()
            return pipe, True

    def loaded(self) -> list[str]:
        """Names of the models held, least recently used first."""
        return list(self._pipelines)

    def held_sizes(self) -> dict[str, int]:
        """The models held and the bytes each takes."""
        with self._lock:
            return {name: self._sizes[name] for name in self._pipelines}

    def held_bytes(self) -> int:
        """Bytes the held models take."""
        return sum(self._sizes[name] for name in self._pipelines)

    def _make_room(self, incoming: int) -> None:
        """Evict least recently used pipelines (never the newest) until ``incoming`` more bytes fit."""
        if self.max_bytes is None:
            return
        evicted = []
        while len(self._pipelines) > (0 if incoming else 1) and self.held_bytes() + incoming > self.max_bytes:
            name, _ = self._pipelines.popitem(last=False)
            evicted.append(name)
        if evicted:
            log.info("evicted %s to stay within %d bytes", ", ".join(evicted), self.max_bytes)
            gc.unfreeze()  # evicted models were frozen out of collection: let their cycles be collected
            free_accelerator_memory()
