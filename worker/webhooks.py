"""Webhook delivery: a Celery task on its own queue POSTs each finished job's record to its webhook URL.

The engine calls :func:`enqueue_deliveries` for finished jobs that asked for a webhook, before acking them.
"""

from typing import Any

from pipeq.contract import Job

DELIVER_TASK = "pipeq.webhook"


def enqueue_deliveries(app: Any, jobs: list[Job]) -> None:
    """Queue one delivery per job on the webhooks queue (a redelivered job may queue a second: see deliver)."""
    if not jobs:
        return
    queue = app.pipeq_settings.webhooks.queue
    with app.producer_or_acquire() as producer:
        for job in jobs:
            app.send_task(
                DELIVER_TASK, args=[job.id, job.webhook], queue=queue, producer=producer, argsrepr=f"[{job.id}]"
            )


def register(app: Any) -> None:
    """Register the delivery task on ``app`` (see deliver)."""
