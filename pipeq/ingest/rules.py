"""The config's ``[[ingest]]`` rules: which object versions become which jobs, under which job id.

A job id is ``s3-`` + the first 40 hex digits of HMAC-SHA256(``ingest_id_key``, bucket NUL key NUL tag): the
same for every announcement or listing of one object version, and impossible to compute without the key, so no
one can submit a job under the id an object will get, or guess which ids exist.
"""

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeq.config.settings import IngestRule
from pipeq.core.contract import ObjectInput
from pipeq.ingest.events import created_objects


@dataclass(frozen=True)
class ObjectJob:
    """One object version and the rule that turns it into a job."""

    rule: IngestRule
    bucket: str
    key: str
    tag: str  # ETag (unquoted), else versionId, else the event's sequencer: what identifies this version
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def job_id(self, id_key: bytes) -> str:
        """The same for every announcement or listing of this version: bucket, key and tag, keyed with ``id_key``."""
        message = f"{self.bucket}\0{self.key}\0{self.tag}".encode()
        return "s3-" + hmac.new(id_key, message, hashlib.sha256).hexdigest()[:40]

    @property
    def seen(self) -> str:
        """This version's member in the ingester's set of seen objects."""
        return f"{self.bucket}/{self.key}@{self.tag}"

    def input(self) -> ObjectInput:
        return ObjectInput(uri=self.uri, version_id=self.version_id)


def match(
    rules: Sequence[IngestRule], bucket: str, key: str, tag: str, version_id: str | None = None
) -> ObjectJob | None:
    """The job for this object under the first rule matching it; None when none does (or for a folder marker)."""
    if key.endswith("/"):
        return None
    for rule in rules:
        if rule.matches(bucket, key):
            return ObjectJob(rule, bucket, key, tag, version_id)
    return None


def jobs_for_event(event: Any, rules: Sequence[IngestRule]) -> list[ObjectJob]:
    """The jobs a parsed bucket notification asks for: created objects matching a rule, keys decoded.

    Deletions and keys no rule matches are left out; a malformed record is logged and skipped (the others
    still count); MalformedEvent when the event as a whole is not a notification.
    """
    jobs = (match(rules, obj.bucket, obj.key, obj.tag, obj.version_id) for obj in created_objects(event))
    return [job for job in jobs if job is not None]
