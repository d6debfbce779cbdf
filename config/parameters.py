"""Job parameters by schema: every key a task's pipeline may receive, at every depth, with its type and range.

Producers are untrusted, and a pipeline hands its keyword arguments on to tokenizers, processors, tesseract and
``model.generate()``, which can load code, models and files. So a job's parameters are checked against
:data:`TASK_PARAMETERS` before it is enqueued and again when a worker receives it (``Job.check``):

* a key that loads code, models or files, or passes a Python object (:data:`REFUSED_KEYS`: ``custom_generate``,
  ``trust_remote_code``, ``assistant_model``, ...) is refused wherever it appears, at any depth, saying why;
* every key of an object of options (``generate_kwargs``, ``tokenize_kwargs``, ...) must be one its schema lists,
  with a value of the listed type and range; unknown keys are refused with the list of known ones;
* what costs work is bounded by the catalogue entry's caps (:class:`pipeq.config.catalogue.ParameterCaps`):
  tokens to generate, beams, returned sequences, labels, frames, processor sizes, list lengths, string lengths,
  and the size of all parameters as JSON.

The names are transformers' own (``tests/config/test_tasks.py`` checks that each top-level one is still taken by
its pipeline). A few are arguments of a pipeline's ``__call__`` (``candidate_labels``; ``question`` and
``word_boxes`` of document-question-answering) or go through its ``**kwargs`` to ``generate`` (the generation
options of text-generation). Options whose values cannot travel as JSON (``return_tensors``, ...) are left out.
Tesseract's free-form ``tesseract_config`` is refused (``-c debug_file=<path>`` writes files); its ``lang`` is
restricted to language codes.
"""

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pipeq.config.parameter_types import (
    AnyOf,
    Boolean,
    Context,
    Data,
    Fixed,
    Integer,
    InvalidParameters,
    Items,
    Labels,
    Null,
    Number,
    Options,
    Text,
    count_within,
    shown,
)

if TYPE_CHECKING:
    from pipeq.config.catalogue import ParameterCaps

REFUSED_KEYS: dict[str, str] = {
    "custom_generate": "it makes generate() load and run code from a repository or directory",
    "trust_remote_code": "it lets transformers run code that comes with a repository",
    "assistant_model": "it loads a second model",
    "assistant_tokenizer": "it loads a tokenizer",
    "pretrained_model_name_or_path": "it names a model to load",
    "tokenizer": "it passes a tokenizer to load or use",
    "processor": "it passes a processor to load or use",
    "feature_extractor": "it passes a feature extractor to load or use",
    "image_processor": "it passes an image processor to load or use",
    "decoder": "it passes a decoder (a language model file) to load",
    "revision": "it picks another version of a model to download",
    "code_revision": "it picks another version of a model's code to download",
    "cache_dir": "it names a directory to download to",
    "token": "it carries Hub credentials",
    "use_auth_token": "it carries Hub credentials",
    "local_files_only": "it steers model downloads",
    "force_download": "it steers model downloads",
    "proxies": "it steers model downloads",
    "subfolder": "it names files to load",
    "generation_config": "it passes a generation config object (or a file to load one from)",
    "streamer": "it passes a Python object to generate()",
    "logits_processor": "it passes Python objects to generate()",
    "stopping_criteria": "it passes Python objects to generate()",
    "prefix_allowed_tokens_fn": "it passes a function to generate()",
    "watermarking_config": "it passes a config object to generate()",
    "chat_template": "it is a template for the worker to run",
    "tesseract_config": "it passes options to tesseract's command line (-c debug_file=<path> writes files)",
    "debug_file": "it names a file to write",
}
"""Keys no job may carry, at any depth, and why. ``prompt_lookup_num_tokens`` is not among them: prompt lookup
decoding matches n-grams of the prompt and loads nothing; it is simply not allowlisted."""

MAX_DEPTH = 8
"""Deepest nesting of lists and objects in a job's parameters (word boxes need 3)."""


def check_parameters(task: str, parameters: Any, caps: "ParameterCaps") -> None:
    """Raise InvalidParameters unless ``parameters`` fit the task's schema (:data:`TASK_PARAMETERS`) and ``caps``.

    Refused keys (:data:`REFUSED_KEYS`) are looked for first, everywhere; then the sizes every parameter is held
    to (nesting, list lengths, string lengths, all parameters as JSON); then each key against its schema.
    """
    context = Context(task, caps)
    if not isinstance(parameters, dict):
        raise InvalidParameters(f"{task} parameters must be an object of name: value, not {shown(parameters)}")
    _check_shape(parameters, context)
    size = len(json.dumps(parameters, ensure_ascii=False).encode())
    if size > caps.max_parameters_bytes:
        raise InvalidParameters(
            f"{task} parameters of {size} bytes (as JSON) exceed this model's cap of {caps.max_parameters_bytes} "
            "(caps.max_parameters_bytes in the catalogue): send less"
        )
    schema = TASK_PARAMETERS[task]
    unknown = sorted(set(parameters) - set(schema.fields))
    if unknown:
        known = ", ".join(sorted(schema.fields)) or "none"
        raise InvalidParameters(f"unknown parameter(s) {', '.join(unknown)} for task {task}; known parameters: {known}")
    missing = sorted(schema.required - set(parameters))
    if missing:
        raise InvalidParameters(f"task {task} needs the parameter(s) {', '.join(missing)}")
    schema.check_fields(parameters, "", context)


def parameters_schema(task: str, caps: "ParameterCaps") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12 subset) of the parameters of a job of ``task`` (or the task an alias names) on a
    model with ``caps``, for forms; raises UnknownTask for a task pipeq does not serve.

    Refused keys are absent (no object takes keys besides its own). ``x-max-bytes`` (all parameters as JSON) and
    ``x-max-depth`` (nesting) state the bounds JSON Schema cannot; rules across keys are not expressed."""
    from pipeq.config.tasks import task_spec  # pipeq.config.tasks imports this module

    name = task_spec(task).name
    schema = TASK_PARAMETERS[name].json_schema(Context(name, caps))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "x-max-bytes": caps.max_parameters_bytes,
        "x-max-depth": MAX_DEPTH,
    }


def _check_shape(parameters: dict, context: Context) -> None:
    """Refused keys anywhere in the parameters; then nesting, list lengths and string lengths."""
    nodes = list(_nodes(parameters))
    for key, path, _value, _depth in nodes:
        if key in REFUSED_KEYS:
            raise InvalidParameters(
                f"{context.task} parameter {path} is refused: {REFUSED_KEYS[key]}. Jobs may not load code, models or "
                f"files, or pass Python objects: {key!r} is refused wherever it appears"
            )
    for _key, path, value, depth in nodes:
        if isinstance(value, dict | list) and depth > MAX_DEPTH:
            raise context.refuse(path, f"nests lists and objects more than {MAX_DEPTH} deep")
        if isinstance(value, list):
            count_within(len(value), path, "max_list_items", context)
        elif isinstance(value, str) and len(value) > context.caps.max_parameter_chars:
            raise InvalidParameters(
                f"{context.task} parameter {path} is a string of {len(value)} characters, more than this model's cap "
                f"of {context.caps.max_parameter_chars} (caps.max_parameter_chars in the catalogue)"
            )


def _nodes(parameters: dict) -> Iterator[tuple[str | None, str, Any, int]]:
    """``(key, path, value, depth)`` of every value in the parameters, in document order: ``key`` is None for list
    items, ``depth`` 1 at the top. Nothing below ``MAX_DEPTH + 1`` (deeper nesting is refused) and no recursion, so
    that no nesting is too deep to look at."""
    stack: list[tuple[str | None, str, Any, int]] = [(key, key, value, 1) for key, value in parameters.items()][::-1]
    while stack:
        key, path, value, depth = stack.pop()
        yield key, path, value, depth
        if depth > MAX_DEPTH:
            continue
        if isinstance(value, dict):
            stack.extend((name, f"{path}.{name}", item, depth + 1) for name, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((None, f"{path}[{i}]", item, depth + 1) for i, item in reversed(list(enumerate(value))))


# --- rules across keys ---------------------------------------------------------------------------------------


def _chunks_advance(parameters: Mapping[str, Any], context: Context) -> str | None:
    """Long audio is cut in chunks of ``chunk_length_s`` overlapping by ``stride_length_s`` on each side: each
    chunk must advance by at least a third of its length, or one clip becomes very many chunks."""
    chunk = parameters.get("chunk_length_s")
    stride = parameters.get("stride_length_s")
    if not chunk or stride is None:
        return None
    left, right = stride if isinstance(stride, list) else (stride, stride)
    if left + right <= chunk * 2 / 3:
        return None
    return (
        f"stride_length_s={stride} leaves chunks of chunk_length_s={chunk} advancing {chunk - left - right:.3g} s "
        f"each; the strides (left + right) may take at most two thirds of a chunk, e.g. {chunk / 3:.3g} on each side"
    )


DOCUMENT_MAX_SEQ_LEN = 384
"""document-question-answering's ``max_seq_len`` when a job gives none (the pipeline's default)."""


def _windows_advance(parameters: Mapping[str, Any], context: Context) -> str | None:
    """Long documents are read in windows of ``max_seq_len`` tokens overlapping by ``doc_stride``: at most half a
    window may overlap, or one page becomes very many windows."""
    stride = parameters.get("doc_stride")
    window = parameters.get("max_seq_len", DOCUMENT_MAX_SEQ_LEN)
    if stride is None or stride <= window // 2:
        return None
    return f"doc_stride={stride} may be at most half of max_seq_len={window} ({window // 2})"


# --- the schemas ---------------------------------------------------------------------------------------------

TOP_K = Integer(1, cap="max_top_k")
THRESHOLD = Number(0, 1)
FUNCTION_TO_APPLY = Text(choices=("sigmoid", "softmax", "none"))
TEMPLATE = Text(pattern=r"[^{}]*\{\}[^{}]*", hint='a string with one "{}" where each label goes, and no other braces')
"""Hypothesis templates are filled with ``str.format``: only ``{}``, no format specs (``{:>999999999}``)."""
TRUNCATION = AnyOf((Boolean(), Text(choices=("longest_first", "only_first", "only_second", "do_not_truncate"))))
PADDING = AnyOf((Boolean(), Text(choices=("longest", "max_length", "do_not_pad"))))
STRINGS = AnyOf((Text(), Items(Text())))

TOKENIZER = Options(
    {"truncation": TRUNCATION, "padding": PADDING, "max_length": Integer(1, cap="max_input_tokens")},
)
"""Tokenizer options (``tokenize_kwargs``, ``tokenizer_kwargs``, ``tokenizer_encode_kwargs``, ``processor_kwargs``)."""

GENERATION = Options(
    {
        "max_new_tokens": Integer(1, cap="max_new_tokens"),
        "min_new_tokens": Integer(0, cap="max_new_tokens"),
        "max_length": Integer(1, cap="max_new_tokens"),
        "min_length": Integer(0, cap="max_new_tokens"),
        "do_sample": Boolean(),
        "temperature": Number(0, 100),
        "top_k": Integer(0, 1_000_000),
        "top_p": Number(0, 1),
        "min_p": Number(0, 1),
        "typical_p": Number(0, 1),
        "repetition_penalty": Number(0, 100),
        "length_penalty": Number(-100, 100),
        "no_repeat_ngram_size": Integer(0, 64),
        "num_beams": Integer(1, cap="max_beams"),
        "num_return_sequences": Integer(1, cap="max_return_sequences"),
        "early_stopping": AnyOf((Boolean(), Text(choices=("never",)))),
    }
)
"""Options of ``model.generate()`` a job may set. ``max_length`` and ``min_length`` count the prompt too, so they are
held to the new-token cap as well."""

SPEECH_GENERATION = GENERATION.extended(
    language=Text(pattern=r"[A-Za-z<>|_ -]{2,32}", hint='a language, e.g. "en", "english" or "<|en|>"'),
    task=Text(choices=("transcribe", "translate")),
    return_timestamps=Boolean(),
    condition_on_prev_tokens=Boolean(),
    compression_ratio_threshold=Number(0, 100),
    logprob_threshold=Number(-100, 100),
    no_speech_threshold=Number(0, 1),
    temperature=AnyOf((Number(0, 100), Items(Number(0, 100), min_items=1))),
)
"""Speech models' ``generate()`` (Whisper's language, task and long-form decoding) besides GENERATION."""

IMAGE_SIDE = Integer(1, cap="max_image_side_px")
IMAGE_SIZE = AnyOf(
    (
        IMAGE_SIDE,
        Options({"height": IMAGE_SIDE, "width": IMAGE_SIDE, "shortest_edge": IMAGE_SIDE, "longest_edge": IMAGE_SIDE}),
    )
)
IMAGE_PROCESSOR = Options(
    {
        "do_resize": Boolean(),
        "do_rescale": Boolean(),
        "do_normalize": Boolean(),
        "do_center_crop": Boolean(),
        "do_convert_rgb": Boolean(),
        "size": IMAGE_SIZE,
        "crop_size": IMAGE_SIZE,
    }
)
"""Image processor options (``image_processor_kwargs``); sizes in pixels, held to the image side cap."""

SPEECH_OPTIONS = Options({**GENERATION.fields, "speaker_id": Integer(0, 100_000), "guidance_scale": Number(0, 100)})
"""text-to-audio's ``forward_params`` and ``generate_kwargs``: generation options, VITS' speaker and MusicGen's
guidance."""

WORD_BOX = Fixed(
    (Text(), Fixed((Integer(0, 1000),) * 4, "[x0, y0, x1, y1]")), "[word, [x0, y0, x1, y1]] (boxes scaled to 0-1000)"
)
OCR_LANGUAGE = Text(
    pattern=r"[a-z_]{3,8}(\+[a-z_]{3,8}){0,3}",
    hint='tesseract language codes: "eng", or up to four joined by "+" ("eng+deu")',
)

CLASSIFICATION = {"top_k": TOP_K, "function_to_apply": FUNCTION_TO_APPLY}
CHAT_GENERATION = {
    "max_new_tokens": Integer(1, cap="max_new_tokens"),
    "generate_kwargs": GENERATION,
    "return_full_text": Boolean(),
    "clean_up_tokenization_spaces": Boolean(),
    "stop_sequence": STRINGS,
    "continue_final_message": Boolean(),
    "skip_special_tokens": Boolean(),
    "processor_kwargs": TOKENIZER,
}
"""Parameters of the image-text-to-text and any-to-any pipelines (generation options go in ``generate_kwargs``)."""
ZERO_SHOT = {"candidate_labels": Labels(), "hypothesis_template": TEMPLATE}
NEEDS_LABELS = frozenset({"candidate_labels"})

TASK_PARAMETERS: dict[str, Options] = {
    "text-classification": Options(
        {
            "top_k": AnyOf((TOP_K, Null())),  # null: every label's score
            "function_to_apply": FUNCTION_TO_APPLY,
            **TOKENIZER.fields,
        }
    ),
    "zero-shot-classification": Options({**ZERO_SHOT, "multi_label": Boolean()}, NEEDS_LABELS),
    "feature-extraction": Options({"truncation": TRUNCATION, "tokenize_kwargs": TOKENIZER}),
    "automatic-speech-recognition": Options(
        {
            "chunk_length_s": Number(1, 3600),
            "stride_length_s": AnyOf((Number(0, 3600), Fixed((Number(0, 3600),) * 2, "[left, right]"))),
            "return_timestamps": AnyOf((Boolean(), Text(choices=("word", "char")))),
            "return_language": Boolean(),
            "generate_kwargs": SPEECH_GENERATION,
            "max_new_tokens": Integer(1, cap="max_new_tokens"),
        },
        rules=(_chunks_advance,),
    ),
    "image-classification": Options(CLASSIFICATION),
    "token-classification": Options(
        {
            "ignore_labels": Items(Text()),
            "aggregation_strategy": Text(choices=("none", "simple", "first", "average", "max")),
            "stride": Integer(0, 256),
        }
    ),
    "fill-mask": Options(
        {"top_k": TOP_K, "targets": AnyOf((Text(), Items(Text(), cap="max_labels"))), "tokenizer_kwargs": TOKENIZER}
    ),
    "text-generation": GENERATION.extended(
        return_full_text=Boolean(),
        clean_up_tokenization_spaces=Boolean(),
        prefix=Text(),
        handle_long_generation=Text(choices=("hole",)),
        stop_sequence=STRINGS,
        truncation=TRUNCATION,
        continue_final_message=Boolean(),
        skip_special_tokens=Boolean(),
        tokenizer_encode_kwargs=TOKENIZER,
        tools=Items(Data()),
        documents=Items(Data()),
    ),
    "audio-classification": Options(CLASSIFICATION),
    "zero-shot-image-classification": Options({**ZERO_SHOT, "tokenizer_kwargs": TOKENIZER}, NEEDS_LABELS),
    "object-detection": Options({"threshold": THRESHOLD}),
    "document-question-answering": Options(
        {
            "question": Text(),
            "word_boxes": Items(WORD_BOX),
            "padding": PADDING,
            "doc_stride": Integer(0, cap="max_input_tokens"),
            "max_question_len": Integer(1, cap="max_input_tokens"),
            "lang": OCR_LANGUAGE,
            "max_answer_len": Integer(1, cap="max_input_tokens"),
            "max_seq_len": Integer(16, cap="max_input_tokens"),
            "top_k": TOP_K,
            "handle_impossible_answer": Boolean(),
        },
        frozenset({"question"}),
        rules=(_windows_advance,),
    ),
    "text-to-audio": Options(
        {"forward_params": SPEECH_OPTIONS, "generate_kwargs": SPEECH_OPTIONS, "processor_kwargs": TOKENIZER}
    ),
    "table-question-answering": Options(
        {
            "sequential": Boolean(),
            "padding": PADDING,
            "truncation": AnyOf((Boolean(), Text(choices=("drop_rows_to_fit", "do_not_truncate")))),
        }
    ),
    "zero-shot-audio-classification": Options(ZERO_SHOT, NEEDS_LABELS),
    "image-feature-extraction": Options({"pool": Boolean(), "image_processor_kwargs": IMAGE_PROCESSOR}),
    "image-segmentation": Options(
        {
            # panoptic, instance or semantic, as far as the model supports it: the pipeline says which it does
            "subtask": Text(pattern=r"[a-z_]{1,32}", hint="a subtask name (panoptic, instance or semantic)"),
            "threshold": THRESHOLD,
            "mask_threshold": THRESHOLD,
            "overlap_mask_area_threshold": THRESHOLD,
        }
    ),
    "image-text-to-text": Options(CHAT_GENERATION),
    "zero-shot-object-detection": Options(
        {"candidate_labels": Labels(), "threshold": THRESHOLD, "top_k": TOP_K}, NEEDS_LABELS
    ),
    "decision": Options({}),
    "depth-estimation": Options({}),
    "video-classification": Options(
        {
            **CLASSIFICATION,
            "num_frames": Integer(1, cap="max_frames"),
            "frame_sampling_rate": Integer(1, 64),
        }
    ),
    "mask-generation": Options(
        {
            "points_per_batch": Integer(1, 256),
            "points_per_crop": Integer(1, 64),
            "crops_n_layers": Integer(0, 2),
            "crop_overlap_ratio": Number(0, 1),
            "crop_n_points_downscale_factor": Integer(1, 16),
            "pred_iou_thresh": Number(0, 1),
            "stability_score_offset": Number(0, 100),
            "mask_threshold": Number(-100, 100),
            "stability_score_thresh": Number(0, 1),
            "max_hole_area": Number(0, 1e8),
            "max_sprinkle_area": Number(0, 1e8),
            "crops_nms_thresh": Number(0, 1),
            "output_rle_mask": Boolean(),
            "output_bboxes_mask": Boolean(),
        }
    ),
    "keypoint-matching": Options({"threshold": THRESHOLD}),
    "any-to-any": Options({**CHAT_GENERATION, "generation_mode": Text(choices=("text", "image", "audio"))}),
}
"""Each task's parameters: name -> schema. mask-generation's grid (``points_per_crop`` squared points per crop,
``4 ** crops_n_layers`` crops per layer) and video's ``frame_sampling_rate`` have fixed bounds."""
