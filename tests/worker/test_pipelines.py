"""Loading catalogue models: placement (one device, several GPUs, accelerate), quantization checks, the LRU cache."""

import logging
from pathlib import Path

import pytest

from devtools.tiny_models import build_text_classification
from pipeq.config.catalogue import ModelEntry
from pipeq.worker.memory import pipeline_bytes
from pipeq.worker.pipelines import PipelineCache, check_can_load, load_pipeline, placement

TASK = "text-classification"


def entry(name: str = "m", **fields) -> ModelEntry:
    return ModelEntry(name=name, task=TASK, **fields)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_text_classification(tmp_path_factory.mktemp("pipelines") / "m")


def test_a_plain_model_goes_on_the_worker_device():
    assert placement(entry(), "cpu") == {"device": "cpu"}
    assert placement(entry(), "cuda:0") == {"device": "cuda:0"}


def test_one_listed_gpu_is_that_gpu_of_the_visible_set():
    assert placement(entry(devices=[1]), "cuda:0") == {"device": "cuda:1"}


def test_max_memory_means_accelerate_places_the_model_within_it():
    where = placement(entry(devices=[0, 1], max_memory={"0": "20GiB", "1": "20GiB", "cpu": "30GiB"}), "cuda:0")
    assert where == {"device_map": "auto", "max_memory": {0: "20GiB", 1: "20GiB", "cpu": "30GiB"}}


def test_quantized_weights_are_placed_while_loading():
    assert placement(entry(quantization="8bit"), "cuda:0") == {"device_map": {"": "cuda:0"}}


@pytest.mark.parametrize(
    "fields",
    [
        {"devices": []},
        {"devices": [0, 0]},
        {"devices": [-1]},
        {"max_memory": {"gpu0": "1GiB"}},
        {"max_memory": {"0": "lots"}},
    ],
)
def test_bad_placements_are_refused_by_the_catalogue(fields):
    with pytest.raises(ValueError):
        entry(**fields)


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantization_on_a_cpu_worker_is_refused_at_start(quantization):
    with pytest.raises(ValueError, match=f"model big asks for {quantization} quantization, which needs CUDA") as info:
        check_can_load([entry(), entry("big", quantization=quantization)], "cpu")
    assert "this worker runs on cpu: serve it from a GPU worker's queue" in str(info.value)


def test_quantization_without_bitsandbytes_says_so(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    with pytest.raises(ValueError, match="needs the bitsandbytes package, and it is not installed"):
        check_can_load([entry("big", quantization="4bit")], "cuda:0")


def test_gpus_on_a_cpu_worker_are_refused_at_start():
    with pytest.raises(ValueError, match=r"model two asks for GPUs \[0, 1\]; this worker runs on cpu"):
        check_can_load([entry("two", devices=[0, 1])], "cpu")


def test_gpus_beyond_the_visible_ones_are_refused_at_start(monkeypatch):
    monkeypatch.setattr("pipeq.worker.pipelines._visible_gpu_count", lambda: 1)
    with pytest.raises(ValueError, match="this worker sees 1"):
        check_can_load([entry("two", devices=[0, 1])], "cuda:0")


def test_host_memory_alone_passes_the_start_check_and_a_gpus_memory_does_not():
    check_can_load([entry(), entry("host", max_memory={"cpu": "1GiB"})], "cpu")  # raises nothing
    with pytest.raises(ValueError, match=r"model gpu asks for GPUs \[0\]; this worker runs on cpu"):
        check_can_load([entry(), entry("gpu", max_memory={"0": "1GiB", "cpu": "1GiB"})], "cpu")


def test_device_map_auto_loads_on_cpu_within_max_memory(tiny, monkeypatch):
    import transformers

    calls: list[dict] = []
    real = transformers.pipeline
    monkeypatch.setattr(transformers, "pipeline", lambda *args, **kwargs: calls.append(kwargs) or real(*args, **kwargs))
    pipe = load_pipeline(entry(id=str(tiny), max_memory={"cpu": "1GiB"}), "cpu")
    assert calls[0]["device_map"] == "auto" and "device" not in calls[0]
    assert calls[0]["model_kwargs"]["max_memory"] in ({"cpu": "1GiB"}, {"cpu": 2**30})  # transformers converts it
    assert str(pipe.device) == "cpu"
    assert pipe("a fine day")[0]["label"] in pipe.model.config.id2label.values()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dtype_is_kept_with_device_map_auto(tiny, dtype):
    pipe = load_pipeline(entry(id=str(tiny), max_memory={"cpu": "1GiB"}, dtype=dtype), "cpu")
    assert str(pipe.model.dtype) == f"torch.{dtype}"


def test_least_recently_used_models_leave_the_cache_first(tiny):
    size = pipeline_bytes(load_pipeline(entry(id=str(tiny)), "cpu"))
    cache = PipelineCache("cpu", max_bytes=int(2.5 * size))
    a, b, c = (entry(name, id=str(tiny)) for name in "abc")
    first_a = cache.get(a)
    cache.get(b)
    assert cache.get(a) is first_a  # a is now the most recently used
    cache.get(c)
    assert cache.loaded() == ["a", "c"]  # b left
    cache.get(b)
    assert cache.loaded() == ["c", "b"]  # then a
    assert cache.held_bytes() == 2 * size <= cache.max_bytes


def test_a_model_larger_than_the_bound_loads_alone_with_a_warning(tiny, caplog):
    cache = PipelineCache("cpu", max_bytes=1)
    with caplog.at_level(logging.WARNING, logger="pipeq.worker.pipelines"):
        cache.get(entry("a", id=str(tiny)))
        b = cache.get(entry("b", id=str(tiny)))
    assert cache.loaded() == ["b"]
    assert cache.held_bytes() == pipeline_bytes(b) > 1
    assert b("a fine day")[0]["label"] in b.model.config.id2label.values()
    assert "more than the cache's 1" in caplog.text


def test_an_unbounded_cache_keeps_every_model(tiny):
    cache = PipelineCache("cpu")
    for name in "abc":
        cache.get(entry(name, id=str(tiny)))
    assert cache.loaded() == ["a", "b", "c"]


def test_every_load_is_reported_once_with_its_outcome_and_a_held_model_is_not(tiny):
    loads = []
    cache = PipelineCache("cpu", on_load=lambda entry, seconds, ok: loads.append((entry.name, ok, seconds > 0)))
    cache.get(entry("a", id=str(tiny)))
    cache.get(entry("a", id=str(tiny)))  # held: no load
    with pytest.raises(Exception):  # noqa: B017 (whatever transformers raises for a missing model)
        cache.get(entry("missing", id=str(tiny / "no-such-model")))
    assert loads == [("a", True, True), ("missing", False, True)]
    assert cache.held_sizes() == {"a": cache.held_bytes()}


def test_a_cpu_worker_serving_a_quantized_model_refuses_to_start(redis_url, s3_endpoint, tmp_path, redis_db):
    from devtools.config_files import write_config
    from pipeq.config.catalogue import ModelEntry
    from tests.support.settings import make_settings
    from tests.support.workers import start_worker_process

    settings = make_settings(redis_url, s3_endpoint, {}, db=redis_db)
    entry = ModelEntry(name="big", id="org/big", task="text-generation", queue="q8", quantization="8bit")
    config = write_config(settings.model_copy(update={"models": [entry]}), tmp_path / "pipeq.toml")
    log = tmp_path / "worker.log"
    process = start_worker_process(config, "q8", log)
    try:
        assert process.wait(120) != 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "8bit quantization" in log.read_text()
