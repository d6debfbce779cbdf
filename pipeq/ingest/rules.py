"""The config's ``[[ingest]]`` rules: which object versions become which jobs, under which job id."""

import hashlib
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

    @property
    def job_id(self) -> str:
        """The same for every announcement or listing of this version: bucket, key and tag, hashed."""
        digest = hashlib.sha256(f"{self.bucket}\0{self.key}\0{self.tag}".encode()).hexdigest()
        return "s3-" + digest[:40]

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
