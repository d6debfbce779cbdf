"""RabbitMQ as the broker, against a private rabbitmq-server: quorum queues, publisher confirms, the heartbeat
that makes a silent worker dead, high jobs on their sibling queue, the waiting counts; and the private server
itself."""

import pytest
from amqp.exceptions import MessageNacked
from kombu import Connection, Queue
from kombu.exceptions import OperationalError

from devtools import local_services
from pipeq.core.amqp import heartbeat_s, high_queue, is_amqp_url, redis_urls, waiting_messages
from pipeq.core.contract import Job, make_input
from pipeq.core.messaging import make_celery
from pipeq.core.publish import publish_jobs
from pipeq.core.webhook_events import DELIVER_TASK
from pipeq.producer import Client
from tests.support.rabbitmq import queue_type, rabbitmq_settings, ready_messages

TEXT = "text-classification"


@pytest.fixture
def amqp_settings(amqp_url, redis_url, s3_endpoint, tiny_models, redis_db):
    return rabbitmq_settings(amqp_url, redis_url, s3_endpoint, {TEXT: tiny_models[TEXT]}, redis_db, dead_after_s=30)


@pytest.fixture
def client(amqp_settings):
    client = Client(amqp_settings)
    yield client
    client.close()


def test_amqp_urls_are_told_from_redis_ones():
    assert is_amqp_url("amqp://guest:guest@rabbit:5672//") and is_amqp_url("pyamqp://h//")
    assert not is_amqp_url("redis://127.0.0.1:6379/0") and not is_amqp_url("sentinel://127.0.0.1:26379/0")


def test_a_rabbitmq_app_has_quorum_queues_confirms_a_heartbeat_and_no_redis_options(amqp_settings):
    conf = make_celery(amqp_settings).conf
    assert conf.broker_transport_options == {"confirm_publish": True}  # no visibility_timeout, no unacked keys
    assert conf.broker_heartbeat == heartbeat_s(amqp_settings) == 10  # a third of dead_after_s
    assert conf.broker_heartbeat_checkrate == 8  # never silent for more than a quarter of an interval
    assert conf.task_default_queue_type == conf.task_create_missing_queue_type == "quorum"
    assert conf.worker_detect_quorum_queues
    assert redis_urls(amqp_settings) == [amqp_settings.result_backend]


def test_the_heartbeat_is_whole_seconds_a_third_of_dead_after_and_at_least_3(amqp_settings):
    for dead_after_s, beat in [(1.0, 3), (5.0, 3), (9.0, 3), (10.0, 3), (30.0, 10), (100.0, 33)]:
        settings = amqp_settings.model_copy(update={"dead_after_s": dead_after_s})
        assert heartbeat_s(settings) == beat
        assert 3 * beat <= max(dead_after_s, 9)  # RabbitMQ closes a silent connection after 2 to 3 beats


def test_model_high_and_webhook_queues_are_quorum_queues(amqp_settings, client, amqp_url):
    queue = amqp_settings.models[0].queue
    client.submit_many(TEXT, ["a normal job", "another"])
    client.submit(TEXT, "an urgent job", priority="high")
    client.submit(TEXT, "a low job", priority="low")
    client.celery.send_task(DELIVER_TASK, args=["no-such-job"], queue=amqp_settings.webhooks.queue)
    for name in (queue, high_queue(queue), amqp_settings.webhooks.queue):
        assert queue_type(amqp_url, name) == "quorum", name
    assert ready_messages(amqp_settings, queue) == {"queue": 3, "high": 1}  # high jobs wait in the sibling


def test_a_high_job_carries_a_priority_rabbitmq_4_takes_as_high(amqp_settings, client):
    queue = amqp_settings.models[0].queue
    ids = {priority: client.submit(TEXT, f"a {priority} job", priority=priority) for priority in ("low", "high")}
    with Connection(amqp_settings.broker_url) as connection:
        channel = connection.channel()
        low = channel.basic_get(queue, no_ack=True)
        high = channel.basic_get(high_queue(queue), no_ack=True)
    assert (low.headers["id"], high.headers["id"]) == (ids["low"], ids["high"])
    assert low.properties["priority"] == 0 and high.properties["priority"] >= 5


def test_a_publish_returns_only_once_rabbitmq_confirms_it(amqp_settings, amqp_url):
    """A full queue that refuses more (reject-publish; a quorum queue lets one message past x-max-length) nacks the
    third job: the publish raises, and that job is not reported published. Without confirms it would return as if
    every job were queued."""
    app = make_celery(amqp_settings)
    full = f"{amqp_settings.models[0].queue}-full"
    arguments = {"x-queue-type": "quorum", "x-max-length": 1, "x-overflow": "reject-publish"}
    app.amqp.queues.add(Queue(full, routing_key=full, queue_arguments=arguments))
    jobs = [Job(task=TEXT, model="tiny-text-classification", input=make_input(f"job {i}")) for i in range(3)]
    published: list[str] = []
    with pytest.raises(OperationalError) as refused:  # after Celery's publish retries
        publish_jobs(app, [(job, full) for job in jobs], published.extend)
    assert isinstance(refused.value.__cause__, MessageNacked)
    assert published == [jobs[0].id, jobs[1].id]
    with Connection(amqp_url) as connection:
        assert waiting_messages(connection, [full]) == {full: 2}


def test_waiting_messages_of_a_queue_never_declared_are_none(amqp_url):
    with Connection(amqp_url) as connection:
        assert waiting_messages(connection, ["never-declared"]) == {"never-declared": 0}


def test_a_missing_rabbitmq_server_is_named(monkeypatch):
    monkeypatch.setattr(local_services, "DEBIAN_RABBITMQ_SCRIPT", "/nonexistent/rabbitmq-server")
    monkeypatch.setattr(local_services.shutil, "which", lambda name, path=None: None)
    with pytest.raises(RuntimeError, match="rabbitmq-server is not installed"), local_services.rabbitmq_server():
        pass
