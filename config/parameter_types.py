"""The types a job parameter may have, for the schemas of pipeq.config.parameters: each checks a JSON value
(type, range, the model's caps) and describes what fits, for messages that say what was wrong and what to send.
"""

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeq.config.catalogue import ParameterCaps


class InvalidParameters(ValueError):
    """A job's parameters break the task's schema or the model's caps; the message says what and what to do."""


@dataclass(frozen=True)
class Context:
    """What a check needs besides the value: the task (for messages) and the model's caps."""

    task: str
    caps: "ParameterCaps"

    def refuse(self, path: str, problem: str) -> InvalidParameters:
        """The error for the parameter at ``path``: ``<task> parameter <path> <problem>``."""
        return InvalidParameters(f"{self.task} parameter {path} {problem}")

    def over_cap(self, path: str, value: int, cap: str) -> InvalidParameters:
        """The error for ``path=value`` over the cap named ``cap``, naming the cap and where it is set."""
        limit = getattr(self.caps, cap)
        return InvalidParameters(
            f"{self.task} parameter {path}={value} exceeds this model's cap of {limit} (caps.{cap} in the "
            f"catalogue): {path} may be at most {limit}"
        )


class Schema:
    """The type (and range) of one parameter value."""

    def check(self, value: Any, path: str, context: Context) -> None:
        """Raise InvalidParameters unless ``value`` fits; ``path`` names it in messages (``generate_kwargs.top_p``)."""
        raise NotImplementedError

    def describe(self, context: Context) -> str:
        """What fits, for messages: ``an integer from 1 to 256``."""
        raise NotImplementedError

    def json_schema(self, context: Context) -> dict[str, Any]:
        """What fits as JSON Schema (a draft 2020-12 subset), for forms; ``x-cap`` names the catalogue cap that bounds
        it. Rules across keys (Options.rules), nesting depth and the size of all parameters are not expressed."""
        raise NotImplementedError

    def fits(self, value: Any, path: str, context: Context) -> bool:
        try:
            self.check(value, path, context)
        except InvalidParameters:
            return False
        return True

    def wrong(self, value: Any, path: str, context: Context) -> InvalidParameters:
        return context.refuse(path, f"must be {self.describe(context)}, not {shown(value)}")


@dataclass(frozen=True)
class Boolean(Schema):
    def check(self, value: Any, path: str, context: Context) -> None:
        if not isinstance(value, bool):
            raise self.wrong(value, path, context)

    def describe(self, context: Context) -> str:
        return "true or false"

    def json_schema(self, context: Context) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Null(Schema):
    def check(self, value: Any, path: str, context: Context) -> None:
        if value is not None:
            raise self.wrong(value, path, context)

    def describe(self, context: Context) -> str:
        return "null"

    def json_schema(self, context: Context) -> dict[str, Any]:
        return {"type": "null"}


@dataclass(frozen=True)
class Integer(Schema):
    """An integer in ``[low, high]``, and at most the model's cap named ``cap`` (a ParameterCaps field)."""

    low: int | None = None
    high: int | None = None
    cap: str | None = None

    def check(self, value: Any, path: str, context: Context) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.wrong(value, path, context)
        if self.cap is not None and value > getattr(context.caps, self.cap) and (self.low is None or value >= self.low):
            raise context.over_cap(path, value, self.cap)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise self.wrong(value, path, context)

    def describe(self, context: Context) -> str:
        high = self.high if self.cap is None else getattr(context.caps, self.cap)
        return "an integer" + _range(self.low, high)

    def json_schema(self, context: Context) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.low is not None:
            schema["minimum"] = self.low
        cap = None if self.cap is None else getattr(context.caps, self.cap)
        if cap is not None and (self.high is None or cap <= self.high):
            schema["maximum"] = cap
            schema["x-cap"] = self.cap
        elif self.high is not None:
            schema["maximum"] = self.high
        return schema


@dataclass(frozen=True)
class Number(Schema):
    """A finite number (integer or not) in ``[low, high]``."""

    low: float | None = None
    high: float | None = None

    def check(self, value: Any, path: str, context: Context) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise self.wrong(value, path, context)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise self.wrong(value, path, context)

    def describe(self, context: Context) -> str:
        return "a number" + _range(self.low, self.high)

    def json_schema(self, context: Context) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number"}
        if self.low is not None:
            schema["minimum"] = self.low
        if self.high is not None:
            schema["maximum"] = self.high
        return schema


@dataclass(frozen=True)
class Text(Schema):
    """A string: one of ``choices``, or matching ``pattern`` (described by ``hint``), or any (within the caps)."""

    choices: tuple[str, ...] = ()
    pattern: str | None = None
    hint: str = ""

    def check(self, value: Any, path: str, context: Context) -> None:
        if not isinstance(value, str):
            raise self.wrong(value, path, context)
        if self.choices and value not in self.choices:
            raise self.wrong(value, path, context)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise self.wrong(value, path, context)

    def describe(self, context: Context) -> str:
        if self.choices:
            return "one of " + ", ".join(json.dumps(choice) for choice in self.choices)
        return self.hint or "a string"

    def json_schema(self, context: Context) -> dict[str, Any]:
        schema = _string(context)  # every string in the parameters is held to max_parameter_chars
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.pattern is not None:
            schema["pattern"] = f"^(?:{self.pattern})$"  # check uses re.fullmatch; JSON Schema patterns search
        if self.hint:
            schema["description"] = self.hint
        return schema


@dataclass(frozen=True)
class Items(Schema):
    """A list of ``item``, at least ``min_items`` long and at most the cap named ``cap``."""

    item: Schema
    cap: str = "max_list_items"
    min_items: int = 0

    def check(self, value: Any, path: str, context: Context) -> None:
        if not isinstance(value, list) or len(value) < self.min_items:
            raise self.wrong(value, path, context)
        count_within(len(value), path, self.cap, context)
        for index, element in enumerate(value):
            self.item.check(element, f"{path}[{index}]", context)

    def describe(self, context: Context) -> str:
        least = f"at least {self.min_items} " if self.min_items else ""
        return f"a list of {least}{_plural(self.item.describe(context))}"

    def json_schema(self, context: Context) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.item.json_schema(context)}
        if self.min_items:
            schema["minItems"] = self.min_items
        return schema | _list_cap(self.cap, context)


@dataclass(frozen=True)
class Fixed(Schema):
    """A list of exactly one value per schema in ``items``, e.g. a word box ``[word, [x0, y0, x1, y1]]``."""

    items: tuple[Schema, ...]
    shape: str

    def check(self, value: Any, path: str, context: Context) -> None:
        if not isinstance(value, list) or len(value) != len(self.items):
            raise self.wrong(value, path, context)
        for index, (element, schema) in enumerate(zip(value, self.items, strict=True)):
            schema.check(element, f"{path}[{index}]", context)

    def describe(self, context: Context) -> str:
        return self.shape

    def json_schema(self, context: Context) -> dict[str, Any]:
        count = len(self.items)
        return {
            "type": "array",
            "prefixItems": [schema.json_schema(context) for schema in self.items],
            "minItems": count,
            "maxItems": count,
            "description": self.shape,
        }


@dataclass(frozen=True)
class Labels(Schema):
    """Candidate labels: a list of strings, or one string of comma-separated labels (as pipelines take them); at
    least one, at most the cap named ``cap``."""

    cap: str = "max_labels"

    def check(self, value: Any, path: str, context: Context) -> None:
        if isinstance(value, str):
            labels = [label for label in value.split(",") if label.strip()]
        elif isinstance(value, list) and all(isinstance(label, str) for label in value):
            labels = value
        else:
            raise self.wrong(value, path, context)
        if not labels:
            raise self.wrong(value, path, context)
        count_within(len(labels), path, self.cap, context, what="labels")

    def describe(self, context: Context) -> str:
        return "a list of strings, or one string of comma-separated labels (at least one)"

    def json_schema(self, context: Context) -> dict[str, Any]:
        cap = _list_cap(self.cap, context)
        listed = {"type": "array", "items": _string(context), "minItems": 1, "maxItems": cap["maxItems"]}
        # at least one label: some character that is neither a comma nor blank (its count of labels is not expressed)
        joined = _string(context) | {"pattern": "[^,\\s]", "description": "comma-separated labels"}
        return {"anyOf": [listed, joined], "x-cap": cap["x-cap"]}


@dataclass(frozen=True)
class Data(Schema):
    """Any JSON data (a chat's tools or documents): keys and values are data, never options; bounded by the caps
    every parameter is held to."""

    def check(self, value: Any, path: str, context: Context) -> None:
        return None

    def describe(self, context: Context) -> str:
        return "JSON data"

    def json_schema(self, context: Context) -> dict[str, Any]:
        return {"description": "JSON data"}


@dataclass(frozen=True)
class AnyOf(Schema):
    """A value that fits one of ``options``."""

    options: tuple[Schema, ...]

    def check(self, value: Any, path: str, context: Context) -> None:
        for option in self.options:
            if option.fits(value, path, context):
                return
        for option in self.options:  # a value of the right type out of its range: that option's own message
            if _same_kind(option, value):
                option.check(value, path, context)
        raise self.wrong(value, path, context)

    def describe(self, context: Context) -> str:
        return " or ".join(option.describe(context) for option in self.options)

    def json_schema(self, context: Context) -> dict[str, Any]:
        return {"anyOf": [option.json_schema(context) for option in self.options]}


Rule = Callable[[Mapping[str, Any], Context], str | None]
"""A check across keys of one object: None, or what is wrong and what to do."""


@dataclass(frozen=True)
class Options(Schema):
    """An object of keyword options: only the keys of ``fields``, each fitting its schema; ``required`` keys present;
    then each of ``rules``."""

    fields: Mapping[str, Schema]
    required: frozenset[str] = frozenset()
    rules: tuple[Rule, ...] = ()

    def check(self, value: Any, path: str, context: Context) -> None:
        if not isinstance(value, dict):
            raise self.wrong(value, path, context)
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            raise context.refuse(
                path, f"has unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(self.fields))}"
            )
        self.check_fields(value, path + ".", context)

    def check_fields(self, value: Mapping[str, Any], prefix: str, context: Context) -> None:
        """Each value against its field's schema, then the rules (the keys are known)."""
        for key, item in value.items():
            self.fields[key].check(item, prefix + key, context)
        for rule in self.rules:
            problem = rule(value, context)
            if problem:
                raise InvalidParameters(f"{context.task} parameters: {problem}")

    def describe(self, context: Context) -> str:
        return "an object with keys " + ", ".join(sorted(self.fields))

    def json_schema(self, context: Context) -> dict[str, Any]:
        """Each field's schema, with its ``describe`` sentence as the description where it has none."""
        properties = {
            name: {"description": field.describe(context)} | field.json_schema(context)
            for name, field in self.fields.items()
        }
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if self.required:
            schema["required"] = sorted(self.required)
        return schema

    def extended(self, **fields: Schema) -> "Options":
        """These options with ``fields`` added (or replaced)."""
        return Options({**self.fields, **fields}, self.required, self.rules)


def count_within(count: int, path: str, cap: str, context: Context, what: str = "items") -> None:
    """Raise InvalidParameters if ``count`` (of ``what`` in the parameter at ``path``) exceeds the cap ``cap``."""
    limit = getattr(context.caps, cap)
    if count > limit:
        raise InvalidParameters(
            f"{context.task} parameter {path} has {count} {what}, more than this model's cap of {limit} "
            f"(caps.{cap} in the catalogue)"
        )


def _string(context: Context) -> dict[str, Any]:
    """A string, as long as the cap every string in the parameters is held to allows."""
    return {"type": "string", "maxLength": context.caps.max_parameter_chars}


def _list_cap(cap: str, context: Context) -> dict[str, Any]:
    """``maxItems`` of a list held to the cap ``cap`` and to max_list_items (every list is), naming the lower one."""
    binding = min((cap, "max_list_items"), key=lambda name: getattr(context.caps, name))
    return {"maxItems": getattr(context.caps, binding), "x-cap": binding}


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    if high is not None:
        return f" of at most {high}"
    return ""


def _plural(description: str) -> str:
    """``a string`` -> ``strings``, for list descriptions; others as they are."""
    words = {"a string": "strings", "an integer": "integers", "a number": "numbers", "JSON data": "JSON values"}
    for single, plural in words.items():
        if description.startswith(single):
            return plural + description[len(single) :]
    return f"items ({description})"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return type(value).__name__


def shown(value: Any, width: int = 60) -> str:
    """``value`` for a message: its kind, and itself when short."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return _kind(value) if len(text) > width else f"{_kind(value)} ({text})"


def _same_kind(schema: Schema, value: Any) -> bool:
    """Whether ``value`` has the type ``schema`` takes (so that a range problem is the one to report)."""
    if isinstance(schema, Integer):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(schema, Number):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(schema, Items | Fixed):
        return isinstance(value, list)
    if isinstance(schema, Options):
        return isinstance(value, dict)
    return False
