"""Durable submission: a submit returns once Redis replicas hold the jobs, so a failover loses none it accepted.

Redis replicates asynchronously: a primary answers a write before any replica has it, and a primary that dies a
moment later takes the last writes with it when Sentinel promotes a replica. ``WAIT n timeout`` blocks until ``n``
replicas acknowledged every write the *same connection* sent before it (or the timeout passed) and says how many
did, so here it is the last command of the pipeline that wrote. With ``submit_replicas`` set, a submit waits for
its records, then for its messages; where fewer replicas answered in time it raises :class:`NotReplicated`
instead of returning. Workers wait the same way for the final records they write before they ack their
messages: an ack that reached a new primary while the result it follows was lost with the old one would leave the
job queued with no message (the chaos soak lost 3 jobs in 3,000 that way). A worker whose wait falls short
requeues the jobs (the redelivery finds them final and acks them, or runs them again if the result was lost).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


class NotReplicated(RuntimeError):
    """Fewer replicas than asked acknowledged a submit's writes in time: a failover now could lose them."""

    def __init__(self, message: str, job_ids: Sequence[str] = (), enqueued: bool = False) -> None:
        super().__init__(message)
        self.job_ids = list(job_ids)
        self.enqueued = enqueued


@dataclass(frozen=True)
class ReplicaWait:
    """Wait for ``replicas`` replicas, for at most ``timeout_s`` seconds."""

    replicas: int
    timeout_s: float

    def add_to(self, pipe: Any) -> None:
        """Append the WAIT to ``pipe`` (not a transaction: WAIT cannot block inside MULTI)."""
        pipe.execute_command("WAIT", self.replicas, max(1, round(self.timeout_s * 1000)))

    def missing(self, acknowledged: Any) -> int:
        """How many replicas short of ``replicas`` a WAIT's reply is."""
        return max(0, self.replicas - int(acknowledged))

    def describe(self, acknowledged: Any) -> str:
        return (
            f"{int(acknowledged)} of the {self.replicas} Redis replica(s) asked for (submit_replicas) acknowledged"
            f" them within {self.timeout_s:g} s (submit_replicas_timeout_s)"
        )


def replica_wait(settings: Any) -> ReplicaWait | None:
    """The wait ``settings`` ask for (``submit_replicas``, ``submit_replicas_timeout_s``); None for none."""
    if not settings.submit_replicas:
        return None
    return ReplicaWait(settings.submit_replicas, settings.submit_replicas_timeout_s)


def run_transaction(client: Any, commands: Iterable[tuple[str, Sequence[Any]]], wait: ReplicaWait | None) -> int:
    """Run ``commands`` (name, arguments) on ``client`` in one MULTI/EXEC, all or none; with ``wait``, then WAIT
    on the same connection. Returns how many replicas acknowledged (0 without ``wait``)."""
    if wait is None:
        pipe = client.pipeline(transaction=True)
        for name, args in commands:
            getattr(pipe, name)(*args)
        pipe.execute()
        return 0
    pipe = client.pipeline(transaction=False)  # MULTI and EXEC spelled out, so WAIT can follow EXEC
    pipe.execute_command("MULTI")
    for name, args in commands:
        getattr(pipe, name)(*args)
    pipe.execute_command("EXEC")
    wait.add_to(pipe)
    *_, executed, acknowledged = pipe.execute()
    for reply in executed or ():
        if isinstance(reply, Exception):
            raise reply
    return int(acknowledged)
