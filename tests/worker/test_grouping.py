"""Which inputs share a pipeline call: similar sizes, chats apart, calls of their own, audio where padding is heard."""

from pipeq.config.tasks import TASKS
from pipeq.worker.decoding import Decoded
from pipeq.worker.grouping import SIMILAR, shared_calls, similar_size_runs
from pipeq.worker.runner import run_group


def test_runs_are_cut_at_the_item_count_and_where_sizes_drop_below_similar():
    sizes = [100, 90, 80, 74, 70, 10]
    assert similar_size_runs(list(range(6)), sizes, max_items=3) == [[0, 1, 2], [3, 4], [5]]
    assert similar_size_runs(list(range(6)), sizes, max_items=3, similar=1.0) == [[0], [1], [2], [3], [4], [5]]


def test_chats_and_other_inputs_never_share_a_call():
    chat = [{"role": "user", "content": "hi"}]
    items = [Decoded("hello", 5.0), Decoded(chat, 5.0), Decoded("there", 5.0), Decoded(list(chat), 5.0)]
    calls = list(shared_calls(None, TASKS["text-generation"], {}, 8, items, [0, 1, 2, 3], [5.0] * 4))
    assert calls == [[0, 2], [1, 3]]


def test_jobs_of_unbatched_tasks_each_get_a_call_of_their_own():
    items = [Decoded({"table": {}, "query": "q"}, 1.0) for _ in range(3)]
    calls = list(shared_calls(None, TASKS["table-question-answering"], {}, 8, items, [0, 1, 2], [1.0] * 3))
    assert calls == [[0], [1], [2]]


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
