"""Accelerator memory: recognising out-of-memory failures, giving memory back, measuring a pipeline."""

import gc
import sys
from typing import Any


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory, or the host did (torch's CPU allocator: "can't allocate
    memory")."""
    torch = sys.modules.get("torch")
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, MemoryError):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def free_accelerator_memory() -> None:
    """Collect garbage and return the CUDA caching allocator's free blocks (a no-op for torch-less processes)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def pipeline_device(pipe: Any) -> str:
    """The device a pipeline runs on, as a job's error message names it."""
    model = getattr(pipe, "model", None)
    device_map = getattr(model, "hf_device_map", None)
    if device_map and len(set(device_map.values())) > 1:
        return "devices " + ", ".join(str(device) for device in dict.fromkeys(device_map.values()))
    return str(getattr(pipe, "device", None) or "this worker's device")


def pipeline_device_type(pipe: Any) -> str:
    """The kind of device a pipeline runs on: "cpu", "cuda", "mps", ... (its first device, if sharded)."""
    device = getattr(pipe, "device", None)
    return getattr(device, "type", None) or str(device or "cpu").split(":")[0]


def out_of_memory_message(pipe: Any, exc: BaseException) -> str:
    """The error of an input that runs out of memory in a call of its own."""
    return (
        f"out of memory: this input is too large for {pipeline_device(pipe)} even alone ({type(exc).__name__}: {exc})"
    )


def pipeline_bytes(pipe: Any) -> int:
    """Bytes held by a pipeline's model: its parameters and buffers."""
    model = getattr(pipe, "model", None)
    if model is None or not hasattr(model, "parameters"):
        return 0
    tensors = [*model.parameters(), *model.buffers()]
    return sum(tensor.nelement() * tensor.element_size() for tensor in tensors)
