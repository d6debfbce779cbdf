"""Trouble with the services a worker depends on (Redis, object storage), which passes: the one reason to requeue
a job rather than fail it. Attempts bound the requeues (``max_attempts``)."""

import botocore.exceptions
import kombu.exceptions
import redis.exceptions

from pipeq.core.replication import NotReplicated


class ResultsNotStored(Exception):
    """A micro-batch ran, but Redis could not take (or replicate) its jobs' final records: the jobs did nothing
    wrong, so they are requeued with their attempt given back."""


_UNREACHABLE = (
    ResultsNotStored,
    ConnectionError,  # also OSError's connection refused / reset
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,  # the broker's connection errors, as kombu raises them from a publish
    botocore.exceptions.ConnectionError,  # endpoint unreachable, connect timeout
    botocore.exceptions.HTTPClientError,  # read timeout, connection closed
    NotReplicated,  # Redis replicas behind (submit_replicas): not yet safe to ack
)
_STORAGE_BUSY = {"SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable", "InternalError"}


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis or object storage is unreachable or busy for now, rather than anything about a
    job."""
    if isinstance(exc, _UNREACHABLE):
        return True
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.get("Code") in _STORAGE_BUSY or status >= 500
    return False
