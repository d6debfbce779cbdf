"""Job parameters by schema: types, ranges, nested unknown keys, refused keys at any depth, caps and their messages."""

import re

import pytest

from pipeq.config.catalogue import ModelEntry, ParameterCaps
from pipeq.config.parameter_types import AnyOf, Fixed, Integer, Items, Labels, Options, Schema
from pipeq.config.parameters import REFUSED_KEYS, TASK_PARAMETERS, InvalidParameters, check_parameters
from pipeq.config.settings import Limits
from pipeq.config.tasks import TASKS
from pipeq.core.contract import InvalidJob, Job, make_input

CAPS = ParameterCaps()


def refused(task: str, parameters: dict, message: str, caps: ParameterCaps = CAPS) -> None:
    with pytest.raises(InvalidParameters, match=re.escape(message)):
        check_parameters(task, parameters, caps)


# --- what jobs send today is accepted ---------------------------------------------------------------------------

ACCEPTED = [
    ("text-classification", {"top_k": None, "function_to_apply": "sigmoid", "truncation": True, "max_length": 64}),
    (
        "zero-shot-classification",
        {"candidate_labels": ["a", "b"], "hypothesis_template": "It is {}.", "multi_label": True},
    ),
    ("zero-shot-object-detection", {"candidate_labels": "cat,dog", "threshold": 0.0, "top_k": 5}),
    (
        "feature-extraction",
        {"truncation": "longest_first", "tokenize_kwargs": {"padding": "max_length", "max_length": 8}},
    ),
    ("fill-mask", {"top_k": 2, "targets": ["sat", "slept"], "tokenizer_kwargs": {"truncation": True}}),
    ("token-classification", {"ignore_labels": ["O"], "aggregation_strategy": "simple", "stride": 16}),
    ("text-generation", {"max_new_tokens": 6, "do_sample": False, "num_beams": 2, "return_full_text": False}),
    ("text-generation", {"do_sample": True, "top_p": 0.9, "temperature": 0.7, "stop_sequence": ["\n"]}),
    ("text-generation", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
    ("automatic-speech-recognition", {"chunk_length_s": 10, "stride_length_s": 2, "return_timestamps": "word"}),
    ("automatic-speech-recognition", {"stride_length_s": [1, 2], "chunk_length_s": 30, "return_language": True}),
    ("automatic-speech-recognition", {"generate_kwargs": {"language": "en", "task": "translate", "num_beams": 5}}),
    ("automatic-speech-recognition", {"generate_kwargs": {"temperature": [0.0, 0.2, 0.4]}, "max_new_tokens": 128}),
    ("text-to-audio", {"forward_params": {"speaker_id": 1}, "generate_kwargs": {"max_new_tokens": 4}}),
    ("image-feature-extraction", {"pool": True, "image_processor_kwargs": {"do_normalize": False, "size": 224}}),
    ("image-feature-extraction", {"image_processor_kwargs": {"size": {"height": 64, "width": 64}}}),
    ("image-text-to-text", {"max_new_tokens": 5, "generate_kwargs": {"do_sample": False}, "return_full_text": False}),
    ("any-to-any", {"max_new_tokens": 5, "generate_kwargs": {"do_sample": False}, "generation_mode": "text"}),
    ("document-question-answering", {"question": "Total?", "word_boxes": [["total", [0, 0, 10, 10]]], "top_k": 2}),
    ("document-question-answering", {"question": "Total?", "lang": "eng+deu", "doc_stride": 128, "max_seq_len": 384}),
    ("video-classification", {"top_k": 2, "num_frames": 8, "frame_sampling_rate": 2, "function_to_apply": "none"}),
    ("mask-generation", {"points_per_crop": 8, "stability_score_thresh": 0.0, "output_rle_mask": True}),
    ("image-segmentation", {"subtask": "panoptic", "threshold": 0.3, "overlap_mask_area_threshold": 0.9}),
    ("table-question-answering", {"sequential": True, "padding": "max_length", "truncation": True}),
    ("keypoint-matching", {"threshold": 0.035}),
    ("depth-estimation", {}),
]


@pytest.mark.parametrize(("task", "parameters"), ACCEPTED, ids=[task for task, _ in ACCEPTED])
def test_parameters_jobs_send_are_accepted(task, parameters):
    check_parameters(task, parameters, CAPS)


def test_every_task_has_a_schema_and_every_cap_a_field():
    assert set(TASK_PARAMETERS) == set(TASKS)
    fields = set(ParameterCaps.model_fields)
    assert caps_used(*TASK_PARAMETERS.values()) <= fields


def caps_used(*schemas: Schema) -> set[str]:
    """The names of every cap the schemas refer to, at any depth."""
    found: set[str] = set()
    for schema in schemas:
        if isinstance(schema, Integer) and schema.cap:
            found.add(schema.cap)
        elif isinstance(schema, Items | Labels):
            found.add(schema.cap)
            found |= caps_used(schema.item) if isinstance(schema, Items) else set()
        elif isinstance(schema, Fixed):
            found |= caps_used(*schema.items)
        elif isinstance(schema, AnyOf):
            found |= caps_used(*schema.options)
        elif isinstance(schema, Options):
            found |= caps_used(*schema.fields.values())
    return found


# --- types and ranges -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "parameters", "message"),
    [
        (
            "feature-extraction",
            {"tokenize_kwargs": "x"},
            "feature-extraction parameter tokenize_kwargs must be an object with keys max_length, padding, truncation, "
            'not a string ("x")',
        ),
        ("text-generation", {"num_beams": "2"}, "parameter num_beams must be an integer from 1 to 5, not a string"),
        ("text-generation", {"max_new_tokens": 5.0}, "max_new_tokens must be an integer from 1 to 256, not a number"),
        ("text-generation", {"do_sample": 1}, "parameter do_sample must be true or false, not an integer (1)"),
        ("text-generation", {"top_p": 1.5}, "parameter top_p must be a number from 0 to 1, not a number (1.5)"),
        ("text-generation", {"stop_sequence": 5}, "stop_sequence must be a string or a list of strings"),
        ("text-classification", {"top_k": True}, "top_k must be an integer from 1 to 100 or null, not a boolean"),
        ("text-classification", {"function_to_apply": "exp"}, 'must be one of "sigmoid", "softmax", "none"'),
        ("automatic-speech-recognition", {"return_timestamps": "words"}, 'true or false or one of "word", "char"'),
        ("automatic-speech-recognition", {"generate_kwargs": {"task": "summarise"}}, "generate_kwargs.task must be"),
        ("object-detection", {"threshold": -0.1}, "parameter threshold must be a number from 0 to 1"),
        ("zero-shot-classification", {"candidate_labels": []}, "candidate_labels must be a list of strings, or one"),
        ("zero-shot-classification", {"candidate_labels": [1, 2]}, "candidate_labels must be a list of strings"),
        ("document-question-answering", {"question": 7}, "parameter question must be a string, not an integer (7)"),
        ("document-question-answering", {"question": "q", "word_boxes": [["a", [1, 2, 3]]]}, "word_boxes[0][1] must"),
        ("image-feature-extraction", {"image_processor_kwargs": {"size": -3}}, "image_processor_kwargs.size must be"),
        ("mask-generation", {"crops_n_layers": 5}, "crops_n_layers must be an integer from 0 to 2, not an integer (5)"),
    ],
)
def test_wrong_types_and_values_are_refused_saying_what_fits(task, parameters, message):
    refused(task, parameters, message)


@pytest.mark.parametrize(
    "lang", ["../../tmp/evil", "eng -c debug_file=/tmp/x", "ENG", "eng+deu+fra+ita+spa", "e", "eng;rm"]
)
def test_the_ocr_language_is_a_few_tesseract_codes(lang):
    refused("document-question-answering", {"question": "q", "lang": lang}, "parameter lang must be tesseract language")


@pytest.mark.parametrize("template", ["{:>999999999}", "{0.__class__}", "no placeholder", "{} and {}", "{label}"])
def test_hypothesis_templates_hold_one_plain_placeholder(template):
    parameters = {"candidate_labels": ["a"], "hypothesis_template": template}
    refused("zero-shot-classification", parameters, 'hypothesis_template must be a string with one "{}"')


# --- unknown keys, at the top and nested -----------------------------------------------------------------------


def test_unknown_top_level_parameters_list_the_known_ones():
    refused(
        "object-detection",
        {"thresh": 0.5},
        "unknown parameter(s) thresh for task object-detection; known parameters: threshold",
    )


@pytest.mark.parametrize(
    ("task", "parameters", "message"),
    [
        (
            "automatic-speech-recognition",
            {"generate_kwargs": {"prompt_lookup_num_tokens": 10}},
            "automatic-speech-recognition parameter generate_kwargs has unknown key(s) prompt_lookup_num_tokens; known "
            "keys: compression_ratio_threshold, condition_on_prev_tokens, do_sample,",
        ),
        (
            "feature-extraction",
            {"tokenize_kwargs": {"return_overflowing_tokens": True}},
            "tokenize_kwargs has unknown key(s) return_overflowing_tokens; known keys: max_length, padding, truncation",
        ),
        (
            "image-text-to-text",
            {"processor_kwargs": {"images_kwargs": {"max_pixels": 10**9}}},
            "processor_kwargs has unknown key(s) images_kwargs; known keys: max_length, padding, truncation",
        ),
        (
            "image-feature-extraction",
            {"image_processor_kwargs": {"size": {"height": 64, "depth": 3}}},
            "image_processor_kwargs.size has unknown key(s) depth; known keys: height, longest_edge, shortest_edge",
        ),
        (
            "text-to-audio",
            {"forward_params": {"attention_implementation": "eager"}},
            "forward_params has unknown key(s) attention_implementation; known keys:",
        ),
    ],
)
def test_unknown_nested_keys_are_refused_listing_the_known_ones(task, parameters, message):
    refused(task, parameters, message)


# --- keys that load code, models or files, at any depth ---------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "parameters", "path"),
    [
        ("text-generation", {"custom_generate": "evil/repo", "trust_remote_code": True}, "custom_generate"),
        (
            "automatic-speech-recognition",
            {"generate_kwargs": {"custom_generate": "/tmp/x"}},
            "generate_kwargs.custom_generate",
        ),
        ("image-text-to-text", {"generate_kwargs": {"trust_remote_code": True}}, "generate_kwargs.trust_remote_code"),
        ("text-to-audio", {"forward_params": {"assistant_model": "evil/model"}}, "forward_params.assistant_model"),
        (
            "text-to-audio",
            {"generate_kwargs": {"x": {"y": {"custom_generate": "a"}}}},
            "generate_kwargs.x.y.custom_generate",
        ),
        ("text-generation", {"tools": [{"function": {"cache_dir": "/tmp"}}]}, "tools[0].function.cache_dir"),
        ("fill-mask", {"tokenizer_kwargs": {"token": "hf_secret"}}, "tokenizer_kwargs.token"),
        (
            "any-to-any",
            {"generate_kwargs": {"generation_config": {"max_length": 9}}},
            "generate_kwargs.generation_config",
        ),
        ("text-generation", {"streamer": "stdout"}, "streamer"),
        (
            "document-question-answering",
            {"question": "q", "tesseract_config": "-c debug_file=/etc/x"},
            "tesseract_config",
        ),
        (
            "text-generation",
            {"tokenizer_encode_kwargs": {"chat_template": "{{ 7 * 7 }}"}},
            "tokenizer_encode_kwargs.chat_template",
        ),
    ],
)
def test_keys_that_load_code_models_or_files_are_refused_wherever_they_appear(task, parameters, path):
    key = path.rsplit(".", 1)[-1]
    refused(task, parameters, f"{task} parameter {path} is refused: {REFUSED_KEYS[key]}")
    refused(task, parameters, f"{key!r} is refused wherever it appears")


def test_refused_keys_are_named_before_anything_else_is_wrong():
    parameters = {"prefix": "x" * 10_000, "zzz": 1, "tools": [{"trust_remote_code": True}]}
    refused("text-generation", parameters, "parameter tools[0].trust_remote_code is refused")


# --- caps ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "parameters", "message"),
    [
        (
            "text-generation",
            {"max_new_tokens": 100_000},
            "max_new_tokens=100000 exceeds this model's cap of 256 (caps.max_new_tokens in the catalogue)",
        ),
        (
            "text-generation",
            {"max_length": 5000},
            "max_length=5000 exceeds this model's cap of 256 (caps.max_new_tokens",
        ),
        (
            "image-text-to-text",
            {"generate_kwargs": {"min_new_tokens": 300}},
            "generate_kwargs.min_new_tokens=300 exceeds",
        ),
        ("automatic-speech-recognition", {"max_new_tokens": 257}, "max_new_tokens=257 exceeds this model's cap of 256"),
        ("text-generation", {"num_beams": 64}, "num_beams=64 exceeds this model's cap of 5 (caps.max_beams in the"),
        ("text-generation", {"num_return_sequences": 50}, "num_return_sequences=50 exceeds this model's cap of 4"),
        (
            "fill-mask",
            {"top_k": 50_000},
            "top_k=50000 exceeds this model's cap of 100 (caps.max_top_k in the catalogue)",
        ),
        (
            "zero-shot-classification",
            {"candidate_labels": [f"label {i}" for i in range(65)]},
            "candidate_labels has 65 labels, more than this model's cap of 64 (caps.max_labels in the catalogue)",
        ),
        (
            "zero-shot-image-classification",
            {"candidate_labels": ",".join(f"l{i}" for i in range(100))},
            "candidate_labels has 100 labels, more than this model's cap of 64 (caps.max_labels",
        ),
        (
            "fill-mask",
            {"targets": ["w"] * 65},
            "targets has 65 items, more than this model's cap of 64 (caps.max_labels",
        ),
        (
            "video-classification",
            {"num_frames": 10_000},
            "num_frames=10000 exceeds this model's cap of 64 (caps.max_frames",
        ),
        (
            "image-feature-extraction",
            {"image_processor_kwargs": {"size": {"shortest_edge": 100_000}}},
            "image_processor_kwargs.size.shortest_edge=100000 exceeds this model's cap of 2048 (caps.max_image_side_px",
        ),
        (
            "feature-extraction",
            {"tokenize_kwargs": {"padding": "max_length", "max_length": 10**9}},
            "tokenize_kwargs.max_length=1000000000 exceeds this model's cap of 4096 (caps.max_input_tokens",
        ),
        (
            "token-classification",
            {"ignore_labels": ["O"] * 2000},
            "ignore_labels has 2000 items, more than this model's cap of 1024 (caps.max_list_items in the catalogue)",
        ),
        (
            "text-generation",
            {"prefix": "x" * 5000},
            "parameter prefix is a string of 5000 characters, more than this model's cap of 4096 "
            "(caps.max_parameter_chars in the catalogue)",
        ),
        (
            "text-generation",
            {"documents": [{"text": "y" * 4000} for _ in range(20)]},
            "exceed this model's cap of 65536 (caps.max_parameters_bytes in the catalogue)",
        ),
        (
            "text-generation",
            {"tools": [[[[[[[[[1]]]]]]]]]},
            "parameter tools[0][0][0][0][0][0][0][0] nests lists and objects more than 8 deep",
        ),
    ],
)
def test_over_a_cap_is_refused_naming_the_cap_and_the_value(task, parameters, message):
    refused(task, parameters, message)


def test_caps_come_from_the_catalogue_entry():
    small = ParameterCaps(max_new_tokens=8, max_beams=1, max_labels=2)
    refused("text-generation", {"max_new_tokens": 9}, "max_new_tokens=9 exceeds this model's cap of 8", small)
    refused("text-generation", {"num_beams": 2}, "num_beams=2 exceeds this model's cap of 1", small)
    refused("zero-shot-classification", {"candidate_labels": "a,b,c"}, "has 3 labels, more than", small)
    check_parameters("text-generation", {"max_new_tokens": 8}, small)


def test_job_check_holds_parameters_to_the_entry_caps():
    entry = ModelEntry(name="gpt", task="text-generation", caps={"max_new_tokens": 16})
    job = Job(task="text-generation", model="gpt", input=make_input("Once"), parameters={"max_new_tokens": 17})
    with pytest.raises(InvalidJob, match=re.escape("max_new_tokens=17 exceeds this model's cap of 16")):
        job.check(Limits(), entry)
    job.check(Limits())  # without an entry: the default caps
    with pytest.raises(InvalidJob, match="tokenize_kwargs must be an object"):
        Job(task="feature-extraction", model="m", input=make_input("x"), parameters={"tokenize_kwargs": "x"}).check(
            Limits()
        )


def test_caps_are_positive_and_known():
    with pytest.raises(ValueError, match="max_new_tokens"):
        ParameterCaps(max_new_tokens=0)
    with pytest.raises(ValueError, match="max_tokens"):
        ModelEntry(name="gpt", task="text-generation", caps={"max_tokens": 5})


# --- work across keys -------------------------------------------------------------------------------------------


def test_audio_chunks_advance_by_a_third_of_their_length_at_least():
    refused(
        "automatic-speech-recognition",
        {"chunk_length_s": 3, "stride_length_s": 1.4},
        "stride_length_s=1.4 leaves chunks of chunk_length_s=3 advancing 0.2 s each",
    )
    refused("automatic-speech-recognition", {"chunk_length_s": 10, "stride_length_s": [6, 1]}, "two thirds of a chunk")
    check_parameters("automatic-speech-recognition", {"chunk_length_s": 3, "stride_length_s": 1}, CAPS)
    refused("automatic-speech-recognition", {"chunk_length_s": 0.01}, "chunk_length_s must be a number from 1 to 3600")


def test_document_windows_overlap_by_half_at_most():
    refused("document-question-answering", {"question": "q", "doc_stride": 300}, "doc_stride=300 may be at most half")
    refused(
        "document-question-answering",
        {"question": "q", "doc_stride": 40, "max_seq_len": 64},
        "doc_stride=40 may be at most half of max_seq_len=64 (32)",
    )
