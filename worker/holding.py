"""How long a worker may hold a message unacked: what RabbitMQ's ``consumer_timeout`` must allow.

RabbitMQ closes the channel of a consumer that keeps a delivery unacked longer than ``consumer_timeout`` (30 minutes
by default), and its messages go back to the queue: a live worker would lose, and later run again, jobs it holds.
A worker holds a message from its delivery until the job's record is stored: while it waits in the micro-batcher
and while it runs. Every message it holds (a prefetch on a queue and one on its high sibling) may run before it
in a micro-batch of its own, and younger, more urgent jobs may overtake it until it has aged to the top
(:data:`pipeq.worker.batcher.BATCHES_PER_LEVEL` batches per level); each batch ends within its model's run time
limit and the watchdog's grace. pipeq bounds each call itself and RabbitMQ's heartbeat catches dead or paused
workers, so nothing is lost by a ``consumer_timeout`` this long.
"""

import math

from pipeq.config.settings import Settings
from pipeq.core.contract import PRIORITIES
from pipeq.core.messaging import prefetch_count
from pipeq.worker.batcher import BATCHES_PER_LEVEL
from pipeq.worker.deadlines import grace_s

RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_S = 30 * 60
DEFAULT_BATCH_S = 60.0
"""A model's ``expected_seconds`` unless set: the longest batch of a catalogue without models."""


def slowest_batch_s(settings: Settings) -> float:
    """The longest one micro-batch of any model may run: its run time limit and the watchdog's grace."""
    limits = [entry.run_time_limit() for entry in settings.models] or [DEFAULT_BATCH_S]
    return max(limit + grace_s(limit) for limit in limits)


def longest_hold_s(settings: Settings) -> float:
    """An upper bound on how long a worker holds a message before it acks it (see the module docstring)."""
    held = 2 * prefetch_count(settings)  # a queue and its high sibling
    overtaking = BATCHES_PER_LEVEL * (len(PRIORITIES) - 1)
    return (held + overtaking) * slowest_batch_s(settings)


def consumer_timeout_ms(settings: Settings) -> int:
    """The ``consumer_timeout`` (rabbitmq.conf, milliseconds) that pipeq's workers need: :func:`longest_hold_s`
    rounded up to the hour, never below RabbitMQ's default."""
    hours = math.ceil(max(longest_hold_s(settings), RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_S) / 3600)
    return hours * 3600 * 1000
