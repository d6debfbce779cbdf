"""API tokens: making them, recognising them by their hash, and what each one may do (its scope)."""

import hashlib
import re
import secrets
from dataclasses import dataclass

from pipeq.api.problems import Problem
from pipeq.config.api import ApiToken
from pipeq.config.catalogue import ModelEntry
from pipeq.config.object_prefixes import ObjectAccess
from pipeq.config.settings import Settings
from pipeq.core.contract import JOB_ID_PATTERN

TOKEN_PREFIX = "pq_"
_TOKEN = re.compile(r"^pq_[A-Za-z0-9_-]{32,100}\Z")
_BEARER = re.compile(r"^Bearer +(\S{1,200})\Z", re.IGNORECASE)
OWNER_SEPARATOR = ":"
"""Between a token's name and a job id of its own in the id the job is stored under; token names have none."""


def new_token() -> tuple[str, str]:
    """A new token's secret (``pq_`` and 43 random URL-safe characters) and its SHA-256, for the config."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, token_sha256(secret)


def token_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a configured token, or no one where the API runs open (no token configured, loopback only).

    A token's jobs are stored under ``<token>:<id>``: ids cannot collide across tokens, and a token never names
    another's job. The API shows each token its own ids."""

    token: ApiToken | None

    @property
    def owner(self) -> str | None:
        return None if self.token is None else self.token.name

    def stored_id(self, job_id: str) -> str:
        """The id a job of this caller's ``job_id`` is stored under; Problem 404 for an id no job could have."""
        if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
            raise Problem(404, "unknown-job", f"no job {str(job_id)[:80]!r}: job ids are 1-128 of A-Z a-z 0-9 ._:@-")
        stored = job_id if self.token is None else f"{self.token.name}{OWNER_SEPARATOR}{job_id}"
        if not JOB_ID_PATTERN.match(stored):
            raise Problem(404, "unknown-job", f"no job {job_id[:80]!r}: that id is too long for this token")
        return stored

    def submitted_id(self, job_id: str) -> str:
        """:meth:`stored_id` for an id a job is submitted under: InvalidJob-worded 422 where it cannot be one."""
        try:
            return self.stored_id(job_id)
        except Problem:
            longest = 128 if self.token is None else 127 - len(self.token.name)
            raise Problem(
                422,
                "invalid-job",
                f"job id {str(job_id)[:80]!r} is not a valid id: 1-{longest} of A-Z a-z 0-9 ._:@-, starting with a"
                " letter or digit",
                [{"field": "id", "detail": "not a valid job id"}],
            ) from None

    def public_id(self, stored: str) -> str:
        """The id this caller knows a stored job by."""
        return stored if self.token is None else stored.removeprefix(f"{self.token.name}{OWNER_SEPARATOR}")

    def owns(self, owner: str | None) -> bool:
        """Whether a job submitted by ``owner`` is this caller's to see and cancel (open API: every job)."""
        return self.token is None or owner == self.token.name

    def refusal(self, entry: ModelEntry) -> tuple[str, str] | None:
        """Why this caller may not submit to ``entry`` (outside its scope), as (field, what to do), or None."""
        if self.token is None:
            return None
        if self.token.models is not None and entry.name not in self.token.models:
            models = ", ".join(self.token.models)
            return "model", f"token {self.token.name!r} may not use model {entry.name!r}; it may use {models}"
        if self.token.tasks is not None and entry.task not in self.token.tasks:
            tasks = ", ".join(self.token.tasks)
            return "task", f"token {self.token.name!r} may not submit {entry.task} jobs; it may submit {tasks}"
        return None

    def object_access(self, settings: Settings, entry: ModelEntry) -> ObjectAccess:
        """Where this caller's jobs on ``entry`` may read objects: the model's prefixes, narrowed to the token's
        ``input_prefixes`` and its own uploads."""
        model_access = settings.object_access(entry)
        if self.token is None:
            return model_access
        mine = list(self.token.input_prefixes)
        if settings.api.uploads_prefix is not None:
            mine.append(upload_folder(settings.api.uploads_prefix, self.token.name))
        inside = _intersection(mine, model_access.prefixes)
        return ObjectAccess(inside, f"the input_prefixes of API token {self.token.name!r} (and its own uploads)")


def upload_folder(uploads_prefix: str, owner: str | None) -> str:
    """The folder a caller's uploads go under: ``<uploads_prefix><token>/`` (``anonymous/`` on an open API)."""
    return f"{uploads_prefix}{owner or 'anonymous'}/"


def _intersection(ours: list[str], theirs: tuple[str, ...]) -> tuple[str, ...]:
    """The prefixes under both one of ``ours`` and one of ``theirs`` (the narrower of each overlapping pair)."""
    narrower = {a for a in ours for b in theirs if a.startswith(b)} | {
        b for b in theirs for a in ours if b.startswith(a)
    }
    return tuple(sorted(narrower))


def authenticate(authorization: str | None, tokens: dict[str, ApiToken]) -> Principal:
    """The caller an ``Authorization: Bearer <token>`` header names, by the hash of its secret; Problem 401 when
    tokens are configured and it names none of them. With no token configured every caller is let in."""
    if not tokens:
        return Principal(None)
    if not authorization:
        raise Problem(401, "unauthenticated", "send your API token: Authorization: Bearer pq_...", headers=_CHALLENGE)
    match = _BEARER.match(authorization)
    secret = match[1] if match else ""
    token = tokens.get(token_sha256(secret)) if _TOKEN.match(secret) else None
    if token is None:
        raise Problem(
            401,
            "unauthenticated",
            "that API token is not one this API accepts (revoked, or mistyped)",
            headers=_CHALLENGE,
        )
    return Principal(token)


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pipeq"'}
