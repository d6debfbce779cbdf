"""Raw broker messages for the security tests: jobs published the way pipeq's Client publishes them, but without
its checks, as anything that can write to the broker could; and a look at what the broker still holds."""

import redis

from pipeq.config.settings import Settings
from pipeq.core.contract import Job
from pipeq.core.messaging import TASK_NAME
from pipeq.core.records import JobRecord
from tests.support.waiting import wait_until


def publish_raw(client, job: Job) -> str:
    """Publish ``job`` to its model's queue as the Client does (``send_task``), skipping ``Job.check``; its id."""
    queue = client.settings.catalogue.models[job.model].queue
    client.celery.send_task(TASK_NAME, args=[job.model_dump(mode="json")], task_id=job.id, queue=queue)
    return job.id


def final_record(client, job_id: str, timeout: float = 60) -> JobRecord:
    """The job's record once it is final (the worker writes one even for a message that was never submitted)."""

    def final() -> bool:
        record = client.store.get(job_id)
        return record is not None and record.done

    wait_until(final, timeout, message=f"job {job_id} is not final after {timeout} s: {client.store.get(job_id)}")
    return client.store.get(job_id)


def broker_holdings(settings: Settings, queue: str = "pipeq") -> dict[str, int]:
    """Messages the broker still holds: queued, unacked, and in the in-flight lists of pipeq's transport."""
    broker = redis.Redis.from_url(settings.broker_url)
    inflight = [key for key in broker.scan_iter("pipeq.inflight.*") if broker.type(key) == b"list"]
    return {
        "queued": broker.llen(queue),
        "unacked": broker.hlen("unacked"),
        "in flight": sum(broker.llen(key) for key in inflight),
    }


def wait_for_empty_broker(settings: Settings, timeout: float = 10) -> None:
    """Until the broker holds no message of the queue: every one was acked, none requeued."""
    wait_until(
        lambda: not any(broker_holdings(settings).values()),
        timeout,
        message=f"the broker still holds messages: {broker_holdings(settings)}",
    )
