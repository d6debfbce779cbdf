"""The JSON Schema of each task's parameters (for GET /v1/models and the console's forms): caps flow through, and
what it accepts matches what check_parameters accepts, for types and ranges."""

import json

import pytest

from pipeq.config.catalogue import ParameterCaps
from pipeq.config.parameter_types import Context, Integer, Text
from pipeq.config.parameters import MAX_DEPTH, TASK_PARAMETERS, InvalidParameters, check_parameters, parameters_schema
from pipeq.config.tasks import TASKS, UnknownTask
from tests.config.test_parameters import ACCEPTED

CAPS = ParameterCaps()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_has_a_json_schema_of_an_object(task):
    schema = parameters_schema(task, CAPS)

    assert json.loads(json.dumps(schema)) == schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(TASK_PARAMETERS[task].fields)
    assert schema.get("required", []) == sorted(TASK_PARAMETERS[task].required)
    assert schema["x-max-bytes"] == CAPS.max_parameters_bytes
    assert schema["x-max-depth"] == MAX_DEPTH
    context = Context(task, CAPS)
    for name, field in TASK_PARAMETERS[task].fields.items():
        assert schema["properties"][name]["description"] == field.describe(context), name


def test_aliases_name_their_task_and_unknown_tasks_are_refused():
    assert parameters_schema("sentiment-analysis", CAPS) == parameters_schema("text-classification", CAPS)
    with pytest.raises(UnknownTask, match="pipeq serves"):
        parameters_schema("text-to-smell", CAPS)


def test_caps_flow_into_the_schema():
    small = ParameterCaps(max_new_tokens=7, max_labels=3, max_list_items=10)

    default = parameters_schema("text-generation", CAPS)["properties"]["max_new_tokens"]
    capped = parameters_schema("text-generation", small)["properties"]["max_new_tokens"]
    assert default == {
        "description": "an integer from 1 to 256",
        "type": "integer",
        "minimum": 1,
        "maximum": 256,
        "x-cap": "max_new_tokens",
    }
    assert capped["maximum"] == 7
    chat = parameters_schema("image-text-to-text", small)["properties"]["generate_kwargs"]["properties"]
    assert chat["max_new_tokens"]["maximum"] == 7
    assert chat["num_beams"] == {
        "description": "an integer from 1 to 5",
        "type": "integer",
        "minimum": 1,
        "maximum": 5,
        "x-cap": "max_beams",
    }
    # a list is held to its own cap and to max_list_items: the lower one, named
    targets = parameters_schema("fill-mask", small)["properties"]["targets"]["anyOf"][1]
    assert (targets["maxItems"], targets["x-cap"]) == (3, "max_labels")
    targets = parameters_schema("fill-mask", ParameterCaps(max_list_items=10))["properties"]["targets"]["anyOf"][1]
    assert (targets["maxItems"], targets["x-cap"]) == (10, "max_list_items")
    labels = parameters_schema("zero-shot-classification", small)["properties"]["candidate_labels"]
    assert labels["x-cap"] == "max_labels"
    assert labels["anyOf"][0]["maxItems"] == 3
    prefix = parameters_schema("text-generation", ParameterCaps(max_parameter_chars=12))["properties"]["prefix"]
    assert prefix["maxLength"] == 12


def test_an_integer_is_held_to_the_lower_of_its_bound_and_its_cap():
    schema = Integer(0, 10, cap="max_new_tokens")

    assert schema.json_schema(Context("t", ParameterCaps(max_new_tokens=7))) == {
        "type": "integer",
        "minimum": 0,
        "maximum": 7,
        "x-cap": "max_new_tokens",
    }
    assert schema.json_schema(Context("t", CAPS)) == {"type": "integer", "minimum": 0, "maximum": 10}
    assert Integer().json_schema(Context("t", CAPS)) == {"type": "integer"}


def test_text_choices_become_an_enum_and_patterns_are_anchored():
    properties = parameters_schema("text-classification", CAPS)["properties"]
    assert properties["function_to_apply"]["enum"] == ["sigmoid", "softmax", "none"]
    assert properties["function_to_apply"]["type"] == "string"
    assert properties["truncation"]["anyOf"][1]["enum"] == [
        "longest_first",
        "only_first",
        "only_second",
        "do_not_truncate",
    ]
    assert Text(pattern="[a-z]+", hint="letters").json_schema(Context("t", CAPS)) == {
        "type": "string",
        "maxLength": CAPS.max_parameter_chars,
        "pattern": "^(?:[a-z]+)$",
        "description": "letters",
    }


# --- the schema accepts what check_parameters accepts, and refuses what it refuses for type and range -----------

VALID = [
    *ACCEPTED,
    ("text-generation", {"max_new_tokens": 256, "min_new_tokens": 0, "top_k": 0, "early_stopping": "never"}),
    ("text-classification", {"top_k": 100}),
    ("zero-shot-classification", {"candidate_labels": " a , b"}),
    ("zero-shot-classification", {"candidate_labels": ["a"] * 64}),
    ("token-classification", {"ignore_labels": ["O"] * 1024}),
    ("document-question-answering", {"question": "Q", "max_seq_len": 16, "word_boxes": [["w", [0, 0, 1000, 1000]]]}),
    ("image-feature-extraction", {"image_processor_kwargs": {"crop_size": {"shortest_edge": 2048}}}),
    ("automatic-speech-recognition", {"generate_kwargs": {"language": "<|en|>", "num_beams": 5}}),
    ("text-generation", {"prefix": "x" * 4096}),
]

INVALID = [
    ("text-generation", {"max_new_tokens": 257}),
    ("text-generation", {"max_new_tokens": 0}),
    ("text-generation", {"max_new_tokens": "5"}),
    ("text-generation", {"max_new_tokens": True}),
    ("text-generation", {"top_p": 1.5}),
    ("text-generation", {"do_sample": "yes"}),
    ("text-generation", {"num_return_sequences": 5}),
    ("text-generation", {"early_stopping": "always"}),
    ("text-generation", {"stop_sequence": 3}),
    ("text-generation", {"prefix": "x" * 4097}),
    ("text-generation", {"unknown": 1}),
    ("text-generation", {"trust_remote_code": True}),
    ("text-classification", {"top_k": 101}),
    ("text-classification", {"function_to_apply": "relu"}),
    ("zero-shot-classification", {}),
    ("zero-shot-classification", {"candidate_labels": []}),
    ("zero-shot-classification", {"candidate_labels": " , "}),
    ("zero-shot-classification", {"candidate_labels": ["a", 1]}),
    ("zero-shot-classification", {"candidate_labels": ["a"] * 65}),
    ("zero-shot-classification", {"candidate_labels": ["a"], "hypothesis_template": "no braces"}),
    ("zero-shot-classification", {"candidate_labels": ["a"], "hypothesis_template": "{:>9}"}),
    ("zero-shot-classification", {"candidate_labels": ["a"], "hypothesis_template": "{} or {}"}),
    ("token-classification", {"ignore_labels": ["O"] * 1025}),
    ("fill-mask", {"targets": ["a"] * 65}),
    ("automatic-speech-recognition", {"stride_length_s": [1, 2, 3]}),
    ("automatic-speech-recognition", {"generate_kwargs": {"language": "e"}}),
    ("automatic-speech-recognition", {"generate_kwargs": {"num_beams": 6}}),
    ("automatic-speech-recognition", {"generate_kwargs": {"temperature": []}}),
    ("automatic-speech-recognition", {"generate_kwargs": {"custom_generate": "x/y"}}),
    ("image-feature-extraction", {"image_processor_kwargs": {"size": 2049}}),
    ("image-feature-extraction", {"image_processor_kwargs": {"size": {"height": 64, "depth": 3}}}),
    ("document-question-answering", {"question": 3}),
    ("document-question-answering", {"question": "Q", "word_boxes": [["w", [0, 0, 10]]]}),
    ("document-question-answering", {"question": "Q", "word_boxes": [["w", [0, 0, 10, 1001]]]}),
    ("document-question-answering", {"question": "Q", "lang": "ENG"}),
    ("document-question-answering", {"question": "Q", "lang": "eng;rm"}),
    ("document-question-answering", {"question": "Q", "max_seq_len": 8}),
    ("video-classification", {"num_frames": 65}),
    ("mask-generation", {"crops_n_layers": 3}),
    ("image-text-to-text", {"generate_kwargs": {"max_new_tokens": 257}}),
    ("any-to-any", {"generation_mode": "video"}),
    ("table-question-answering", {"truncation": "only_first"}),
    ("decision", {"anything": 1}),
]


def validator(task: str, caps: ParameterCaps = CAPS):
    jsonschema = pytest.importorskip("jsonschema")
    schema = parameters_schema(task, caps)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(("task", "parameters"), VALID, ids=[task for task, _ in VALID])
def test_what_check_parameters_accepts_validates(task, parameters):
    check_parameters(task, parameters, CAPS)
    errors = [error.message for error in validator(task).iter_errors(parameters)]
    assert errors == []


@pytest.mark.parametrize(("task", "parameters"), INVALID, ids=[task for task, _ in INVALID])
def test_what_check_parameters_refuses_does_not_validate(task, parameters):
    with pytest.raises(InvalidParameters):
        check_parameters(task, parameters, CAPS)
    assert not validator(task).is_valid(parameters)


def test_a_lowered_cap_is_held_to_by_the_schema_as_by_the_check():
    small = ParameterCaps(max_new_tokens=7)
    schema = validator("text-generation", small)

    check_parameters("text-generation", {"max_new_tokens": 7}, small)
    assert schema.is_valid({"max_new_tokens": 7})
    with pytest.raises(InvalidParameters, match=r"caps\.max_new_tokens"):
        check_parameters("text-generation", {"max_new_tokens": 8}, small)
    assert not schema.is_valid({"max_new_tokens": 8})
