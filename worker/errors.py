"""Why one job failed. Each error fails its own job only; its type name is what callers see."""


class JobFailure(Exception):
    """Base of the errors that fail a single job; ``type`` is what the job record reports."""

    @property
    def type(self) -> str:
        return type(self).__name__


class MediaNotFound(JobFailure):
    """The referenced object does not exist (or its bucket does not)."""


class MediaTooLarge(JobFailure):
    """The media is larger than the configured limit."""


class UnreadableMedia(JobFailure):
    """The media could not be decoded as the task's modality (corrupt or wrong format)."""


class WrongInputKind(JobFailure):
    """The input is of a kind the task does not take (e.g. text for speech recognition)."""


class ModelUnavailable(JobFailure):
    """The model could not be loaded (not in the cache while offline, bad revision, ...)."""


class PipelineError(JobFailure):
    """The transformers pipeline raised on this input."""


class JobTimeout(JobFailure):
    """The job's pipeline call ran past its model's run time limit (``run_time_limit_s`` in the catalogue)."""


class TooManyAttempts(JobFailure):
    """The job was delivered more than ``max_attempts`` times; it is not run again."""


class InternalError(JobFailure):
    """The worker failed on this job in a way no check foresaw (a bug in pipeq or a library): the job fails once,
    saying where and why, instead of being retried."""


class Canceled(JobFailure):
    """The job was canceled while its call ran: the call stopped at its next piece, and nothing is kept."""
