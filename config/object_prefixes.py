"""Which objects jobs may read: the ``allowed_object_prefixes`` of the settings, narrowed per catalogue entry.

A prefix is a whole bucket, ``s3://media/``, or a folder in one, ``s3://media/calls/``: it ends with "/", so
``s3://media/in/`` allows ``s3://media/in/a.wav`` but never ``s3://media/internal-secrets``. ``s3://media`` is
read as the whole bucket; ``s3://media/in`` is refused (write ``s3://media/in/``).

An object is allowed when its ``s3://bucket/key`` starts with one of the prefixes and its key is plain: no
empty, ``.`` or ``..`` segments, no backslash, no control character. S3 keys are literal strings, but some
stores and proxies normalise paths, so a key that could be read as another one is refused everywhere.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

SETTING = "allowed_object_prefixes"
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,62}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def key_problem(key: str) -> str | None:
    """Why an object key is refused (it could be read as another key), or None for a plain key."""
    segments = key.split("/")
    if "" in segments:
        return "has an empty segment (a leading, trailing or doubled '/')"
    if "." in segments or ".." in segments:
        return "has a '.' or '..' segment"
    if "\\" in key:
        return "has a backslash"
    if _CONTROL.search(key):
        return "has a control character"
    return None


def normalise_prefix(prefix: str) -> str:
    """``prefix`` as ``s3://bucket/`` or ``s3://bucket/folder/``; ValueError saying how to write it otherwise."""
    if not prefix.startswith("s3://"):
        raise ValueError(f"{prefix!r} is not an object prefix: write s3://bucket/ or s3://bucket/folder/")
    bucket, _, path = prefix.removeprefix("s3://").partition("/")
    if not BUCKET_NAME.match(bucket):
        raise ValueError(
            f"{prefix!r} does not name a bucket (3-63 lowercase letters, digits, '.' and '-'): s3://bucket/"
        )
    if not path:
        return f"s3://{bucket}/"
    if not path.endswith("/"):
        raise ValueError(
            f"{prefix!r} must end with '/': a prefix is a whole bucket or a folder, so that s3://{bucket}/{path}/"
            f" never allows s3://{bucket}/{path}-something-else. Write {prefix + '/'!r}"
        )
    problem = key_problem(path.removesuffix("/"))
    if problem:
        raise ValueError(f"{prefix!r}: its folder {problem}; write a plain folder such as s3://{bucket}/calls/")
    return prefix


def covers(prefixes: Iterable[str], location: str) -> bool:
    """Whether ``location`` (an object's or a folder's ``s3://bucket/...``) lies under one of ``prefixes``."""
    return any(location.startswith(prefix) for prefix in prefixes)


@dataclass(frozen=True)
class ObjectAccess:
    """The prefixes one model's jobs may read objects under, and the setting that lists them."""

    prefixes: tuple[str, ...]
    setting: str = SETTING
    """Where an operator changes the prefixes: the settings' key, or a catalogue entry's."""

    def refusal(self, bucket: str, key: str) -> str | None:
        """Why a job may not read ``s3://bucket/key`` (what to do included), or None when it may."""
        uri = f"s3://{bucket}/{key}"
        problem = key_problem(key)
        if problem:
            return f"object {uri} is refused: its key {problem}. Refer to objects by their plain key"
        if not self.prefixes:
            return (
                f"object {uri} is refused: {self.setting} is empty, so jobs may read no objects. An operator lists"
                f' the prefixes jobs may read in {self.setting}, e.g. ["s3://media/"]'
            )
        if not covers(self.prefixes, uri):
            return (
                f"object {uri} is outside {self.setting} ({', '.join(self.prefixes)}): put it under one of those"
                f" prefixes, or ask an operator to add its prefix to {self.setting}"
            )
        return None

    def allows(self, bucket: str, key: str) -> bool:
        return self.refusal(bucket, key) is None
