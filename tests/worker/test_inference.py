"""Running a group through a pipeline: size order, output shapes, and failures isolated by splitting."""

from pipeq.config.tasks import TASKS
from pipeq.worker.decoding import Decoded
from pipeq.worker.errors import PipelineError
from pipeq.worker.inference import SIMILAR, run_group


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


class CountingPipeline:
    """A real pipeline that counts how many inputs each call gets."""

    def __init__(self, pipe) -> None:
        self.pipe, self.feature_extractor, self.calls = pipe, pipe.feature_extractor, []

    def __call__(self, inputs, **params):
        self.calls.append(len(inputs) if isinstance(inputs, list) else 1)
        return self.pipe(inputs, **params)


def test_speech_without_an_attention_mask_shares_calls_only_with_speech_of_the_same_length(reference):
    """wav2vec2-style models see zero padding as sound: a padded clip would get another transcript."""
    from devtools.media import speech
    from tests.support.compare import same

    asr = TASKS["automatic-speech-recognition"]
    pipe = CountingPipeline(reference(asr.name))
    long, shorter = (
        speech("hello there this is a long sentence to make the clip"),
        speech("hello there this is a long sentence to make"),
    )
    assert SIMILAR * len(long) < len(shorter) < len(long)  # similar enough to share a call, were padding harmless
    clips = [long, shorter, long.copy(), shorter.copy()]
    items = [Decoded({"raw": clip, "sampling_rate": 16_000}, len(clip) / 16_000) for clip in clips]
    results = run_group(pipe, asr, {}, 8, items)
    alone = [reference(asr.name)({"raw": clip, "sampling_rate": 16_000}) for clip in clips]
    assert all(same(result, expected) for result, expected in zip(results, alone, strict=True))
    assert sorted(pipe.calls) == [2, 2]  # the two equal pairs, each in one call
