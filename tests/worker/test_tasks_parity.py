"""The newer tasks through the real worker: each job's result equals transformers.pipeline on the same tiny model."""

import io

import pytest
from PIL import Image, ImageDraw

from devtools.media import SAMPLING_RATE, encode_audio, picture, speech
from pipeq.config.settings import Limits
from pipeq.config.tasks import task_spec
from pipeq.core.contract import InvalidJob
from pipeq.worker.decoding import decode
from pipeq.worker.errors import UnreadableMedia, WrongInputKind
from tests.support.decoded import rgb, samples_of
from tests.support.jobs import check, run
from tests.support.settings import model_name

pytestmark = pytest.mark.usefixtures("worker")

TEXTS = ["John Smith lives in Paris.", "Terrible service at the Berlin office, never again!", "ok"]
GREEDY = {"max_new_tokens": 6, "do_sample": False}
CHATS = [
    {"messages": [{"role": "user", "content": "Hello there, how are you?"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]},
]
DOCUMENT_TEXT = "Invoice 4711 total 99 dollars due March"


def document(text: str = DOCUMENT_TEXT) -> bytes:
    """A white page with ``text`` in black, large enough for Tesseract to read."""
    image = Image.new("RGB", (640, 120), "white")
    ImageDraw.Draw(image).text((20, 40), text, fill="black", font_size=28)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("task", "texts", "parameters"),
    [
        ("token-classification", TEXTS, None),
        ("token-classification", TEXTS, {"aggregation_strategy": "simple"}),
        ("token-classification", TEXTS, {"ignore_labels": ["O", "B-PER"]}),
        ("fill-mask", ["The cat [MASK] on the mat.", "Paris is the [MASK] of France.", "[MASK]"], None),
        ("fill-mask", ["The cat [MASK] on the mat.", "Hello [MASK]!"], {"top_k": 2}),
        ("fill-mask", ["The cat [MASK] on the mat."], {"targets": ["sat", "slept"]}),
        ("text-generation", ["Once upon a time there was", "Hi", "The weather today is"], GREEDY),
        ("text-generation", ["Once upon a time there was", "Hi"], {**GREEDY, "return_full_text": False}),
        ("text-generation", ["Once upon a time"], {**GREEDY, "max_new_tokens": 3, "num_beams": 2}),
    ],
)
def test_text_tasks_match_the_pipeline(client, reference, task, texts, parameters):
    records = run(client, task, texts, parameters)
    pipe = reference(task)
    check(records, [pipe(text, **(parameters or {})) for text in texts])


@pytest.mark.parametrize("parameters", [GREEDY, {**GREEDY, "return_full_text": False}])
def test_chats_match_the_pipeline(client, reference, parameters):
    records = run(client, "text-generation", CHATS, parameters)
    pipe = reference("text-generation")
    check(records, [pipe(list(chat["messages"]), **parameters) for chat in CHATS])
    generated = records[0].result[0]["generated_text"]
    if parameters.get("return_full_text", True):
        assert generated[:-1] == CHATS[0]["messages"]
        assert generated[-1]["role"] == "assistant"
    else:
        assert isinstance(generated, str)


def test_sampling_options_are_passed_on(client, reference):
    """Sampling from the single most likely token (top_k=1) is greedy decoding: the results are deterministic, so
    they can equal the pipeline's; a worker that dropped top_k would sample at random."""
    params = {"max_new_tokens": 4, "do_sample": True, "top_k": 1, "top_p": 0.9, "temperature": 0.7}
    params["return_full_text"] = False
    records = run(client, "text-generation", [TEXTS[0], CHATS[0]], params)
    pipe = reference("text-generation")
    check(records, [pipe(TEXTS[0], **params), pipe(list(CHATS[0]["messages"]), **params)])
    assert all(isinstance(record.result[0]["generated_text"], str) for record in records)  # the new text alone


def test_a_malformed_chat_is_refused(client):
    with pytest.raises(InvalidJob, match="needs a role"):
        client.submit("text-generation", {"messages": [{"content": "no role"}]}, model=model_name("text-generation"))


def test_chat_decoding():
    spec = task_spec("text-generation")
    decoded = decode(spec, CHATS[1], Limits())
    assert decoded.value == CHATS[1]["messages"]
    assert decoded.size == len("Be brief.") + len("Name a colour.")
    for bad in ({"messages": []}, {"messages": ["hi"]}, {"messages": [{"role": "user"}]}, {"prompt": "x"}):
        with pytest.raises(WrongInputKind):
            decode(spec, bad, Limits())
    with pytest.raises(UnreadableMedia, match="exceeds the limit"):
        decode(spec, CHATS[0], Limits(max_text_chars=5))


@pytest.mark.parametrize("parameters", [None, {"top_k": 1}, {"function_to_apply": "sigmoid"}])
def test_audio_classification_matches_the_pipeline(client, reference, upload, parameters):
    clips = [speech("yes"), speech("no thank you"), speech("yes")]
    data = [encode_audio(clip, "WAV") for clip in clips]
    records = run(
        client, "audio-classification", [upload(data[0], ".wav"), upload(data[1], ".wav"), data[2]], parameters
    )
    pipe = reference("audio-classification")
    heard = [{"raw": samples_of(wav), "sampling_rate": SAMPLING_RATE} for wav in data]
    check(records, [pipe(clip, **(parameters or {})) for clip in heard])


@pytest.mark.parametrize(
    "parameters",
    [
        {"candidate_labels": ["cat", "dog", "car"]},
        {"candidate_labels": ["sunny", "rainy"], "hypothesis_template": "The weather is {}."},
    ],
)
def test_zero_shot_image_classification_matches_the_pipeline(client, reference, upload, parameters):
    images = [picture(80, 60, seed=seed) for seed in (1, 2, 3)]
    records = run(client, "zero-shot-image-classification", [upload(images[0], ".png"), *images[1:]], parameters)
    pipe = reference("zero-shot-image-classification")
    check(records, [pipe(rgb(data), **parameters) for data in images])


@pytest.mark.parametrize("parameters", [None, {"threshold": 0.0}, {"threshold": 0.2}])
def test_object_detection_matches_the_pipeline(client, reference, upload, parameters):
    images = [picture(80, 60, seed=4), picture(80, 64, seed=5, fmt="JPEG")]
    records = run(client, "object-detection", [upload(images[0], ".png"), images[1]], parameters)
    pipe = reference("object-detection")
    check(records, [pipe(rgb(data), **(parameters or {})) for data in images])


def test_document_question_answering_reads_the_page_with_tesseract(client, reference, upload):
    pages = [document(), document("Order 12 shipped to Lyon on Monday")]
    params = {"question": "What is the total?"}
    records = run(client, "document-question-answering", [upload(pages[0], ".png"), pages[1]], params)
    pipe = reference("document-question-answering")
    check(records, [pipe(rgb(page), **params) for page in pages])
    answer = records[0].result[0]["answer"]
    assert answer and set(answer.split()) <= set(DOCUMENT_TEXT.split())  # a span of the OCR'd words


def test_document_question_answering_with_word_boxes_and_top_k(client, reference, upload):
    words = [["Invoice", [10, 10, 100, 40]], ["total", [110, 10, 200, 40]], ["99", [210, 10, 250, 40]]]
    params = {"question": "What is the total?", "word_boxes": words, "top_k": 2}
    page = document("nothing readable here")
    [record] = run(client, "document-question-answering", [upload(page, ".png")], params)
    expected = reference("document-question-answering")(rgb(page), **params)
    check([record], [expected])
    assert {answer["answer"] for answer in record.result} <= {
        "Invoice",
        "total",
        "99",
        "Invoice total",
        "total 99",
        "Invoice total 99",
    }
