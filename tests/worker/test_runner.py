"""Running a group through a pipeline: size order, output shapes, and failures isolated by splitting."""

from pipeq.config.tasks import TASKS
from pipeq.worker.decoding import Decoded
from pipeq.worker.errors import ModelUnavailable, PipelineError
from pipeq.worker.runner import run_group
from pipeq.worker.task_quirks import NEEDED_PACKAGES


class FakePipeline:
    """Upper-cases its inputs, records each call, and raises on any list holding 'bad'."""

    tokenizer = None

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, inputs: list[str] | str, batch_size: int = 1, **params) -> list[dict] | dict:
        if isinstance(inputs, str):  # a call on one item returns that item's output
            return self(list([inputs]))[0]
        self.calls.append(list(inputs))
        if "bad" in inputs:
            raise ValueError("cannot handle 'bad'")
        return [{"text": text.upper()} for text in inputs]


def items(*texts: str) -> list[Decoded]:
    return [Decoded(text, float(len(text))) for text in texts]


def test_inputs_reach_the_pipeline_longest_first_and_results_return_in_order():
    pipe = FakePipeline()
    results = run_group(pipe, TASKS["zero-shot-classification"], {}, 8, items("bb", "a", "cccc"))
    assert pipe.calls == [["cccc"], ["bb"], ["a"]]  # too different in size to share a call
    assert results == [{"text": "BB"}, {"text": "A"}, {"text": "CCCC"}]


def test_runs_hold_similar_sizes_up_to_the_batch_size():
    pipe = FakePipeline()
    texts = ["x" * n for n in (100, 10, 90, 9, 10, 10, 8, 80)]
    run_group(pipe, TASKS["zero-shot-classification"], {}, 3, items(*texts))
    assert [[len(text) for text in call] for call in pipe.calls] == [[100, 90, 80], [10, 10, 10], [9, 8]]


def test_one_bad_input_fails_alone_and_the_rest_succeed():
    pipe = FakePipeline()
    texts = ["one", "two", "bad", "four", "five"]
    results = run_group(pipe, TASKS["zero-shot-classification"], {}, 8, items(*texts))
    assert isinstance(results[2], PipelineError)
    assert "cannot handle 'bad'" in str(results[2])
    assert [r["text"] for i, r in enumerate(results) if i != 2] == ["ONE", "TWO", "FOUR", "FIVE"]
    assert len(pipe.calls) > 1  # the batch was split to find the culprit


def test_a_task_missing_its_package_fails_every_job_without_calling_the_model(monkeypatch):
    monkeypatch.setitem(NEEDED_PACKAGES, "zero-shot-classification", ("no_such_package_pipeq", "for a test"))
    pipe = FakePipeline()
    results = run_group(pipe, TASKS["zero-shot-classification"], {}, 8, items("one", "two"))
    assert pipe.calls == []
    assert all(isinstance(result, ModelUnavailable) for result in results)
    assert "pip install no_such_package_pipeq" in str(results[0])
