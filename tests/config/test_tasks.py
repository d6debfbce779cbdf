"""The task table agrees with the pinned transformers: every listed parameter is one its pipeline takes, and the
nested options are ones the tokenizer, image processor or ``generate`` they go to takes."""

import inspect
import pydoc
import typing

import pytest
from transformers import GenerationConfig, PreTrainedTokenizerBase, WhisperForConditionalGeneration
from transformers.pipelines import SUPPORTED_TASKS, TASK_ALIASES
from transformers.processing_utils import ImagesKwargs

from pipeq.config.parameters import IMAGE_PROCESSOR, SPEECH_GENERATION, TOKENIZER
from pipeq.config.tasks import GENERATE_KWARGS, TASKS, Modality, task_spec
from pipeq.config.tasks import TASK_ALIASES as OUR_ALIASES

# Parameters a pipeline takes through its **kwargs: tokenizer arguments, generation arguments.
THROUGH_KWARGS = {
    "text-classification": {"truncation", "padding", "max_length"},
    "automatic-speech-recognition": {"max_new_tokens"},
    "text-generation": GENERATE_KWARGS,
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_parameter_is_accepted_by_the_pipeline(name):
    pipeline_class = SUPPORTED_TASKS[name]["impl"]
    if isinstance(pipeline_class, str):  # some are given by dotted path
        pipeline_class = pydoc.locate(pipeline_class)
    sanitize = pipeline_class._sanitize_parameters
    signature = inspect.signature(sanitize)
    source = inspect.getsource(sanitize)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    call = inspect.signature(pipeline_class.__call__).parameters  # e.g. question, word_boxes, candidate_labels
    for parameter in TASKS[name].parameters:
        named = parameter in signature.parameters or f'"{parameter}"' in source or parameter in call
        assert named or (takes_any and parameter in THROUGH_KWARGS.get(name, ())), f"{name} does not take {parameter}"


def test_generation_options_are_generation_config_fields():
    config = GenerationConfig()
    for parameter in GENERATE_KWARGS:
        assert hasattr(config, parameter), parameter


def test_speech_generation_options_are_generation_fields_or_whisper_generate_arguments():
    config = GenerationConfig()
    whisper = inspect.signature(WhisperForConditionalGeneration.generate).parameters
    for option in SPEECH_GENERATION.fields:
        assert hasattr(config, option) or option in whisper, option


def test_tokenizer_options_are_tokenizer_arguments():
    call = inspect.signature(PreTrainedTokenizerBase.__call__).parameters
    assert set(TOKENIZER.fields) <= set(call)


def test_image_processor_options_are_image_processor_arguments():
    assert set(IMAGE_PROCESSOR.fields) <= set(typing.get_type_hints(ImagesKwargs))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_required_parameters_are_listed_and_modalities_known(name):
    spec = TASKS[name]
    assert spec.required <= spec.parameters
    assert spec.modality in typing.get_args(Modality)
    assert spec.required_input_keys <= spec.dict_input_keys
    assert (spec.modality == "dict") <= bool(spec.dict_input_keys)


def test_every_task_of_the_pinned_transformers_is_served():
    assert set(TASKS) == set(SUPPORTED_TASKS)
    assert OUR_ALIASES == TASK_ALIASES
    for alias, task in TASK_ALIASES.items():
        assert task_spec(alias).name == task


def test_unknown_tasks_list_the_served_ones():
    with pytest.raises(ValueError, match="pipeq serves: any-to-any, audio-classification, automatic-speech"):
        task_spec("translate-my-cat")
