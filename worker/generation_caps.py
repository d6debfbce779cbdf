"""A job that names no generation length generates at most its model's cap of new tokens.

Jobs are held to ``caps.max_new_tokens`` at submission for the lengths they name (pipeq.config.parameters). A job
that names none gets the model's default: its generation config's ``max_new_tokens`` or ``max_length``, else the
pipeline's own default (256 new tokens in transformers 5). Any of them may exceed the cap, and only the worker
knows them, so when a pipeline is loaded its default is lowered to the cap where it is higher.
"""

from typing import Any

from pipeq.config.catalogue import ModelEntry


def cap_default_length(pipe: Any, entry: ModelEntry) -> Any:
    """``pipe``, with the generation length a job gets when it names none lowered to ``entry.caps.max_new_tokens``.

    Where the length is the pipeline's default (the model's generation config sets none), the pipeline's default is
    lowered: a job's own ``max_length`` still replaces it. Where the model's generation config sets one over the cap,
    its ``max_new_tokens`` becomes the cap, which ``generate()`` prefers to a job's ``max_length`` (ask with
    ``max_new_tokens`` instead). Pipelines that do not generate are left as they are.
    """
    config = getattr(getattr(pipe, "model", None), "generation_config", None)
    pipeline_defaults = getattr(pipe, "_generation_defaults", None)
    if config is None or pipeline_defaults is None:
        return pipe
    cap = entry.caps.max_new_tokens
    own = config.to_diff_dict()
    if "max_new_tokens" in own or "max_length" in own:
        if own.get("max_new_tokens", own.get("max_length")) > cap:
            config.max_new_tokens = cap
    elif pipeline_defaults.get("max_new_tokens", 0) > cap:
        pipeline_defaults["max_new_tokens"] = cap
    return pipe
