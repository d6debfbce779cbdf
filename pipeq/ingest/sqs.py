"""Source: bucket notifications from Amazon SQS queues: S3's own, through an SNS topic, or from EventBridge."""

import logging
import threading
from typing import Any

import botocore.exceptions

from pipeq.core.amqp import redis_urls
from pipeq.core.storage import sqs_client
from pipeq.ingest.events import MalformedEvent, sqs_event
from pipeq.ingest.ingester import Ingester
from pipeq.ingest.redis_list import UNREACHABLE as REDIS_UNREACHABLE
from pipeq.ops import metrics
from pipeq.ops.http import impatient_redis

log = logging.getLogger("pipeq.ingest")

RETRY_SECONDS = 1.0
FIRST_BACKOFF_S = 30
"""How long a message that could not be handled stays invisible after its first receive; doubled each receive."""
MAX_BACKOFF_S = 12 * 3600
"""SQS's longest visibility timeout."""
UNREACHABLE = (*REDIS_UNREACHABLE, botocore.exceptions.BotoCoreError)
"""Failures that are no message's fault (Redis, the broker or SQS out of reach): the batch stops there."""


def backoff_s(receive_count: int) -> int:
    """How long a message received ``receive_count`` times that could not be handled is hidden: 30 s, 60 s, ...
    up to 12 hours."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** min(max(receive_count, 1) - 1, 20))


class SqsSource:
    """Long-polls each queue of ``queue_urls`` (a thread per queue) for batches of up to ``batch`` messages.

    A message is deleted only after the jobs it announces are submitted (delete_message_batch at the end of each
    batch): a killed ingester loses nothing, SQS hands its messages out again after their visibility timeout
    (``visibility_s``, default the queue's), and job ids keep that to one job per object version; so do several
    ingesters on one queue. S3's test event, SNS subscription messages and EventBridge events other than
    ``Object Created`` are deleted and ignored. A message that is not a notification (or whose jobs fail for a
    reason of its own) is counted and left to the queue's redrive policy (a dead-letter queue after
    maxReceiveCount receives), hidden 30 s after its first receive, 60 s after its second, ... (at most 12 h).
    After a failure no message is received until the ingester's Redis answers again, so an outage does not spend
    messages' receive counts. Stopping takes up to ``wait_s`` seconds (a long poll in flight).
    """

    def __init__(
        self,
        ingester: Ingester,
        queue_urls: list[str],
        wait_s: int = 20,
        batch: int = 10,
        visibility_s: int | None = None,
    ) -> None:
        if not queue_urls:
            raise ValueError("SqsSource needs at least one queue URL")
        if not 1 <= batch <= 10:
            raise ValueError(f"an SQS receive returns 1 to 10 messages, not {batch}")
        if not 0 <= wait_s <= 20:
            raise ValueError(f"an SQS long poll waits 0 to 20 s, not {wait_s}")
        self.ingester = ingester
        self.queue_urls = list(dict.fromkeys(queue_urls))
        self.wait_s = wait_s
        self.batch = batch
        self.visibility_s = visibility_s
        self.sqs = sqs_client(ingester.settings, max_connections=max(10, 2 * len(self.queue_urls)))
        settings = ingester.settings
        self._probes = [impatient_redis(url, 2.0) for url in dict.fromkeys(redis_urls(settings))]

    def run(self, stop_event: threading.Event) -> None:
        """Consume every queue until ``stop_event`` is set; on a failure, retry after RETRY_SECONDS."""
        if len(self.queue_urls) == 1:
            self.consume(self.queue_urls[0], stop_event)
            return
        threads = [
            threading.Thread(target=self.consume, args=(url, stop_event), name=f"pipeq-sqs-{index}")
            for index, url in enumerate(self.queue_urls)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def consume(self, url: str, stop_event: threading.Event) -> None:
        """Receive and handle batches from the queue at ``url`` until ``stop_event`` is set."""
        failed = False
        while not stop_event.is_set():
            try:
                if failed:
                    for probe in self._probes:
                        probe.ping()
                    failed = False
                self.receive(url)
            except UNREACHABLE as exc:
                log.warning(
                    "reading SQS queue %s: %s: %s; retrying in %s s", url, type(exc).__name__, exc, RETRY_SECONDS
                )
                failed = True
                stop_event.wait(RETRY_SECONDS)
            except botocore.exceptions.ClientError as exc:  # no such queue, access denied, ...
                log.error("reading SQS queue %s: %s; retrying in %s s", url, exc, RETRY_SECONDS)
                failed = True
                stop_event.wait(RETRY_SECONDS)
            except Exception:
                log.exception("reading SQS queue %s failed; retrying in %s s", url, RETRY_SECONDS)
                failed = True
                stop_event.wait(RETRY_SECONDS)

    def receive(self, url: str) -> int:
        """One long poll of the queue at ``url`` and the messages it returns; how many were received."""
        options: dict[str, Any] = {"VisibilityTimeout": self.visibility_s} if self.visibility_s is not None else {}
        response = self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=self.batch,
            WaitTimeSeconds=self.wait_s,
            AttributeNames=["ApproximateReceiveCount"],
            **options,
        )
        messages = response.get("Messages", [])
        done: list[dict[str, Any]] = []
        try:
            for message in messages:
                if self.handle(url, message):
                    done.append(message)
        finally:  # what was handled before a failure is acknowledged all the same
            self.delete(url, done)
        return len(messages)

    def handle(self, url: str, message: dict[str, Any]) -> bool:
        """Submit the jobs one message announces; whether it is done with (to delete). A message that is not a
        notification, or whose jobs fail for a reason of its own, is hidden for a while and left to the redrive
        policy. Raises UNREACHABLE failures: the message's jobs may not be submitted."""
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        body = message.get("Body", "")
        try:
            event = sqs_event(body)
            if event is not None:
                self.ingester.handle_event(event, "sqs")
            return True
        except MalformedEvent as exc:
            metrics.ingest_events.labels("sqs", "malformed").inc()
            log.error(
                "message %s of %s (received %d times) is not a bucket notification; left to the queue's redrive"
                " policy: %s: %.300r",
                message.get("MessageId"),
                url,
                receives,
                exc,
                body,
            )
        except UNREACHABLE:
            raise
        except Exception:
            log.exception(
                "submitting the jobs of message %s of %s (received %d times) failed; it comes back later",
                message.get("MessageId"),
                url,
                receives,
            )
        self.hide(url, message, backoff_s(receives))
        return False

    def hide(self, url: str, message: dict[str, Any], seconds: int) -> None:
        """Keep a message invisible for ``seconds``, so that it is not received again in a tight loop."""
        try:
            self.sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=seconds
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            log.warning("could not hide message %s of %s for %d s: %s", message.get("MessageId"), url, seconds, exc)

    def delete(self, url: str, messages: list[dict[str, Any]]) -> None:
        """Acknowledge ``messages``; one that fails to be deleted comes back, and makes no second job."""
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            entries = [{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(chunk)]
            response = self.sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            for failure in response.get("Failed", []):
                message = chunk[int(failure["Id"])]
                log.warning(
                    "message %s of %s was not deleted (%s: %s): it will be received again, and make no new job",
                    message.get("MessageId"),
                    url,
                    failure.get("Code"),
                    failure.get("Message"),
                )

    def close(self) -> None:
        self.sqs.close()
        for probe in self._probes:
            probe.close()
