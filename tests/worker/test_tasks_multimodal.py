"""image-text-to-text, any-to-any and keypoint-matching through the real worker: media by reference inside dict
inputs and chats, each job's result equal to transformers.pipeline on the same tiny model and the same pictures."""

import importlib.util
from typing import Any

import pytest

from devtools.media import encode_audio, picture, speech, truncated
from devtools.tiny_multimodal import AUDIO_PROMPT
from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import Limits
from pipeq.config.tasks import task_spec
from pipeq.core.contract import InvalidJob, Job, make_input
from pipeq.worker.decoding import decode
from pipeq.worker.errors import ModelUnavailable, WrongInputKind
from pipeq.worker.pipelines import load_pipeline
from pipeq.worker.runner import run_group
from tests.support.compare import same
from tests.support.decoded import rgb, samples_of
from tests.support.jobs import check, failed, run
from tests.support.settings import model_name
from tests.support.spy import Spy

pytestmark = pytest.mark.usefixtures("worker")

VISION, OMNI, MATCHING = "image-text-to-text", "any-to-any", "keypoint-matching"
GREEDY = {"max_new_tokens": 5, "generate_kwargs": {"do_sample": False}}
PROMPTS = ["<image> What is this?", "<image> Describe the picture in a few words, please.", "<image> Colours?"]
MISSING = "s3://media/no-such-picture.png"


def as_pipeline_sees(value: Any, media: dict[str, bytes]) -> Any:
    """``value`` with each upload's s3:// string and each inline picture replaced by the decoded RGB image."""
    if isinstance(value, dict):
        return {key: as_pipeline_sees(item, media) for key, item in value.items()}
    if isinstance(value, list):
        return [as_pipeline_sees(item, media) for item in value]
    if isinstance(value, bytes):
        return rgb(value)
    return rgb(media[value]) if value in media else value


@pytest.fixture
def pictures(upload) -> tuple[dict[str, bytes], list[str | bytes]]:
    """Four pictures of one size (so they may share a call): two uploaded (as s3:// strings), two inline bytes."""
    data = [picture(64, 48, seed=seed) for seed in (1, 2, 3, 4)]
    refs = [upload(data[0], ".png"), upload(data[1], ".png")]
    return dict(zip(refs, data[:2], strict=True)), [*refs, *data[2:]]


# --- image-text-to-text ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameters", [GREEDY, {**GREEDY, "return_full_text": False}])
def test_prompts_with_images_match_the_pipeline(client, reference, pictures, parameters):
    media, refs = pictures
    inputs = [
        {"images": refs[0], "text": PROMPTS[0]},
        {"images": refs[2], "text": PROMPTS[1]},
        {"images": [refs[3]], "text": PROMPTS[2]},
        {"images": [refs[1], refs[2]], "text": "<image> and <image>: what changed?"},
    ]
    records = run(client, VISION, inputs, parameters)
    pipe = reference(VISION)
    check(records, [pipe(as_pipeline_sees(value, media), **parameters) for value in inputs])
    assert max(record.micro_batch_jobs for record in records) > 1


def chats(refs: list) -> list[dict]:
    """Chats with image parts under each key processors read (image, url, path), a prefill, a text-only chat."""
    return [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": refs[0]}, text("What is it?")]}]},
        {
            "messages": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": [text("Look:"), {"type": "image", "url": refs[2]}, text("Colour?")]},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image", "path": refs[1]}, text("Describe it.")]},
                {"role": "assistant", "content": [text("It shows")]},
            ]
        },
        {"messages": [{"role": "user", "content": "Hello there, no picture today."}]},
    ]


def text(value: str) -> dict:
    return {"type": "text", "text": value}


@pytest.mark.parametrize("parameters", [GREEDY, {**GREEDY, "return_full_text": False}])
def test_chats_with_image_parts_match_the_pipeline(client, reference, pictures, parameters):
    media, refs = pictures
    inputs = chats(refs)
    records = run(client, VISION, inputs, parameters)
    pipe = reference(VISION)
    check(records, [pipe(as_pipeline_sees(chat["messages"], media), **parameters) for chat in inputs])
    reply = records[2].result[0]["generated_text"]
    if parameters.get("return_full_text", True):  # the prefilled assistant message is continued, images echoed
        assert reply[-1]["content"][-1]["text"].startswith("It shows")
        assert reply[0]["content"][0]["path"]["content_type"] == "image/png"
    else:
        assert isinstance(reply, str)


def test_continue_final_message_is_passed_on(client, reference, pictures):
    media, refs = pictures
    inputs = chats(refs)[2:3]
    parameters = {**GREEDY, "continue_final_message": False}
    records = run(client, VISION, inputs, parameters)
    check(records, [reference(VISION)(as_pipeline_sees(inputs[0]["messages"], media), **parameters)])
    assert records[0].result[0]["generated_text"][-1]["role"] == "assistant"
    assert len(records[0].result[0]["generated_text"]) == 3  # a new assistant message after the prefill


def test_prompts_and_chats_share_calls_with_their_own_kind_and_equal_single_calls(reference):
    data = [picture(64, 48, seed=seed) for seed in (5, 6, 7)]
    raw = [
        {"images": data[0], "text": PROMPTS[0]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": data[1]}, text("Name it.")]}]},
        {"images": data[1], "text": PROMPTS[1]},
        {"messages": [{"role": "user", "content": [{"type": "image", "image": data[2]}, text("Its colour?")]}]},
        {"images": data[2], "text": PROMPTS[2]},
    ]
    spec = task_spec(VISION)
    items = [decode(spec, value, Limits()) for value in raw]
    pipe = Spy(reference(VISION))
    results = run_group(pipe, spec, GREEDY, 8, items)
    assert sorted(len(call) for call in pipe.calls) == [2, 3]  # the three prompts in one call, the two chats in another
    singles = [reference(VISION)(decode(spec, value, Limits()).value, **GREEDY) for value in raw]
    for result, single in zip(results, singles, strict=True):
        assert same(result, single), (result, single)


def test_bad_inputs_fail_their_own_jobs(client, reference, upload, pictures):
    media, refs = pictures
    cases = {
        "good": {"images": refs[0], "text": PROMPTS[0]},
        "corrupt": {"images": upload(truncated(picture(64, 48)), ".png"), "text": PROMPTS[0]},
        "missing": {"images": MISSING, "text": PROMPTS[0]},
        "missing in chat": {"messages": [{"role": "user", "content": [{"type": "image", "image": MISSING}]}]},
        "no <image>": {"images": refs[2], "text": "What is this?"},
        "good too": {"images": refs[3], "text": PROMPTS[1]},
    }
    records = dict(zip(cases, run(client, VISION, list(cases.values()), GREEDY), strict=True))
    pipe = reference(VISION)
    check(
        [records["good"], records["good too"]],
        [pipe(as_pipeline_sees(cases[n], media), **GREEDY) for n in ("good", "good too")],
    )
    failed(records["corrupt"], "UnreadableMedia", "unreadable image")
    failed(records["missing"], "MediaNotFound", MISSING)
    failed(records["missing in chat"], "MediaNotFound", MISSING)
    failed(records["no <image>"], "PipelineError", "<image> tokens")
    for url_or_path in (
        {"images": "https://example.com/cat.png", "text": PROMPTS[0]},
        {"messages": [{"role": "user", "content": [{"type": "image", "path": "/etc/passwd"}]}]},
    ):  # refused at submission (tests/security/test_urls_and_paths.py)
        with pytest.raises(InvalidJob, match="pass an s3://bucket/key reference or inline bytes"):
            client.submit(VISION, url_or_path, model=model_name(VISION))


def test_text_and_images_are_both_required(client, pictures):
    _, refs = pictures
    for value, missing in (({"images": refs[0]}, "text"), ({"text": PROMPTS[0]}, "images")):
        with pytest.raises(InvalidJob, match=f"needs the dict input key\\(s\\) {missing}"):
            client.submit(VISION, value, model=model_name(VISION))


def test_a_job_without_text_that_skips_the_client_fails_alone_on_receipt(client, reference, pictures):
    media, refs = pictures
    good = client.make_job(VISION, {"images": refs[0], "text": PROMPTS[0]}, model_name(VISION), GREEDY)
    unchecked = Job(task=VISION, model=model_name(VISION), input=make_input({"images": refs[1]}), parameters=GREEDY)
    ids = client.enqueue([(unchecked, good[1]), good])
    records = client.wait_many(ids, timeout=120)
    failed(records[unchecked.id], "InvalidJob", "needs the dict input key(s) text")
    check(
        [records[good[0].id]],
        [reference(VISION)(as_pipeline_sees({"images": refs[0], "text": PROMPTS[0]}, media), **GREEDY)],
    )


# --- any-to-any ----------------------------------------------------------------------------------------------------


@pytest.fixture
def clips(upload) -> tuple[list[str | bytes], list]:
    """Spoken clips as WAV (one uploaded, one inline) and their samples as the worker decodes them."""
    wavs = [encode_audio(speech(words), "WAV") for words in ("yes", "no thank you")]
    samples = [samples_of(wav) for wav in wavs]
    return [upload(wavs[0], ".wav"), wavs[1]], samples


@pytest.mark.parametrize("parameters", [GREEDY, {**GREEDY, "return_full_text": False, "generation_mode": "text"}])
def test_any_to_any_prompts_and_chats_with_audio_match_the_pipeline(client, reference, clips, parameters):
    refs, samples = clips
    inputs = [
        {"text": f"{AUDIO_PROMPT} What is said?", "audio": refs[0]},
        {"text": f"{AUDIO_PROMPT} Say it again, slowly.", "audio": refs[1]},
        {"text": "Hello, no audio here."},
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio": refs[1]}, text("Who speaks?")]}]},
        {"messages": [{"role": "user", "content": [text("Listen:"), {"type": "audio", "path": refs[0]}]}]},
    ]
    heard = [
        {"text": inputs[0]["text"], "audio": samples[0]},
        {"text": inputs[1]["text"], "audio": samples[1]},
        inputs[2],
        [{"role": "user", "content": [{"type": "audio", "audio": samples[1]}, text("Who speaks?")]}],
        [{"role": "user", "content": [text("Listen:"), {"type": "audio", "path": samples[0]}]}],
    ]
    records = run(client, OMNI, inputs, parameters)
    pipe = reference(OMNI)
    check(records, [pipe(value, **parameters) for value in heard])


def test_any_to_any_bad_inputs_fail_their_own_jobs(client, reference, clips, upload):
    refs, samples = clips
    cases = {
        "good": {"text": f"{AUDIO_PROMPT} What?", "audio": refs[0]},
        "not audio": {"text": f"{AUDIO_PROMPT} What?", "audio": upload(picture(), ".png")},
        "missing": {"text": f"{AUDIO_PROMPT} What?", "audio": "s3://media/no-such-clip.wav"},
        "no audio token": {"text": "What?", "audio": refs[1]},
    }
    records = dict(zip(cases, run(client, OMNI, list(cases.values()), GREEDY), strict=True))
    check([records["good"]], [reference(OMNI)({"text": cases["good"]["text"], "audio": samples[0]}, **GREEDY)])
    failed(records["not audio"], "UnreadableMedia", "unreadable audio")
    failed(records["missing"], "MediaNotFound", "s3://media/no-such-clip.wav")
    with pytest.raises(InvalidJob, match="URLs and paths are not fetched"):
        client.submit(
            OMNI, {"text": f"{AUDIO_PROMPT} What?", "audio": "https://example.com/clip.wav"}, model=model_name(OMNI)
        )
    failed(records["no audio token"], "PipelineError", "<|AUDIO|> tokens")
    with pytest.raises(InvalidJob, match="needs the dict input key\\(s\\) text"):
        client.submit(OMNI, {"audio": refs[0]}, model=model_name(OMNI))


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_any_to_any_models_that_see_images_need_torchvision(tiny_models):
    entry = ModelEntry(name="llava-any", id=str(tiny_models[VISION]), task=OMNI)
    with pytest.raises(ModelUnavailable, match="Torchvision library"):
        load_pipeline(entry, "cpu")


# --- keypoint-matching ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parameters", [None, {"threshold": 0.0}, {"threshold": 0.035}])
def test_keypoint_pairs_match_the_pipeline(client, reference, pictures, parameters):
    media, refs = pictures
    inputs = [{"images": [refs[0], refs[2]]}, {"images": [refs[3], refs[1]]}, {"images": [refs[1], refs[1]]}]
    records = run(client, MATCHING, inputs, parameters)
    pipe = reference(MATCHING)
    check(records, [pipe(as_pipeline_sees(value["images"], media), **(parameters or {})) for value in inputs])
    threshold = (parameters or {}).get("threshold", 0.0)
    assert all(match["score"] >= threshold for record in records for match in record.result)
    assert any(record.result for record in records)


def test_a_pair_must_be_two_readable_images(client, reference, pictures, upload):
    media, refs = pictures
    cases = {
        "good": {"images": [refs[0], refs[2]]},
        "three": {"images": refs[:3]},
        "one": {"images": refs[0]},
        "corrupt": {"images": [refs[0], upload(truncated(picture()), ".png")]},
        "missing": {"images": [MISSING, refs[1]]},
        "good too": {"images": [refs[3], refs[1]]},
    }
    records = dict(zip(cases, run(client, MATCHING, list(cases.values())), strict=True))
    pipe = reference(MATCHING)
    check(
        [records["good"], records["good too"]],
        [pipe(as_pipeline_sees(cases[n]["images"], media)) for n in ("good", "good too")],
    )
    failed(records["three"], "WrongInputKind", "a pair of images")
    failed(records["three"], "WrongInputKind", "not 3 image(s)")
    failed(records["one"], "WrongInputKind", "not 1 image(s)")
    failed(records["corrupt"], "UnreadableMedia", "unreadable image")
    failed(records["missing"], "MediaNotFound", MISSING)


# --- decoding ------------------------------------------------------------------------------------------------------


def test_multimodal_decoding():
    data = picture(64, 48, seed=8)
    wav = encode_audio(speech("yes"), "WAV")
    chat = {"messages": [{"role": "user", "content": [{"type": "image", "url": data}, text("Hi")]}]}
    [message] = decode(task_spec(VISION), chat, Limits()).value
    assert message["content"][0]["url"].tobytes() == rgb(data).tobytes()
    audio = decode(task_spec(OMNI), {"text": "x", "audio": wav}, Limits(), 16_000).value["audio"]
    assert audio.dtype.name == "float32" and len(audio) == len(samples_of(wav))
    pair = decode(task_spec(MATCHING), {"images": [data, data]}, Limits()).value
    assert [image.size for image in pair] == [(64, 48), (64, 48)]
    for bad, message in (
        ({"images": [data]}, "not 1 image"),
        ({"images": [data, "s3 text"]}, "'images' holds str"),
        ({"images": [data, {"x": 1}]}, "'images' holds dict"),
    ):
        with pytest.raises(WrongInputKind, match=message):
            decode(task_spec(MATCHING), bad, Limits())
