"""``pipeq webhooks``: new-secret (valid for any Standard Webhooks receiver, even while the configured secret
is refused), failed, redeliver, and the actions' arguments."""

import argparse
import base64
import json
import socket

import pytest
import redis
import standardwebhooks
from pydantic import ValidationError

from pipeq.cli.main import build_parser, main
from pipeq.config.settings import Metrics, Settings, Webhooks
from pipeq.webhooks.cli import run_cli
from pipeq.webhooks.dead_letters import DeadLetters
from pipeq.webhooks.signing import signed_headers

URL = "https://hooks.example.com/in"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["webhooks", *argv])


@pytest.fixture
def settings(redis_url, redis_db) -> Settings:
    """Settings on a Redis database pair of this test's own; the webhooks queue is on the broker database."""
    return Settings(broker_url=f"{redis_url}/{redis_db}", result_backend=f"{redis_url}/{redis_db + 1}")


def test_the_actions_and_their_arguments():
    assert parse("failed").webhooks_action == "failed"
    assert parse("new-secret").webhooks_action == "new-secret"
    assert parse("redeliver", "job-1").job_id == "job-1"
    worker = parse("worker", "--concurrency", "4")
    assert (worker.webhooks_action, worker.concurrency, worker.loglevel) == ("worker", 4, "INFO")


def test_new_secret_prints_a_secret_standard_receivers_accept(capsys):
    assert main(["webhooks", "new-secret"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    body = b'{"id":"job-1"}'
    assert standardwebhooks.Webhook(secret).verify(body, signed_headers(secret, "job-1", body)) == {"id": "job-1"}
    assert Settings(webhooks={"secret": secret}).webhooks.secret.get_secret_value() == secret


def test_new_secret_works_while_the_configured_secret_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("PIPEQ_WEBHOOKS__SECRET", "a plain string secret of old")
    with pytest.raises(ValidationError, match="`pipeq webhooks new-secret` prints one"):
        main(["webhooks", "failed"])
    assert main(["webhooks", "new-secret"]) == 0
    assert capsys.readouterr().out.startswith("whsec_")


def test_failed_lists_dead_letters_as_json_lines_oldest_first(settings, capsys):
    letters = DeadLetters(redis.Redis.from_url(settings.result_backend))
    older = letters.add("job-1", URL, 8, f"{URL} answered 500")
    newer = letters.add("job-2", URL, 1, f"{URL} answered 404")
    assert run_cli(parse("failed"), lambda: settings) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [older, newer]


def test_redeliver_queues_the_delivery_again_and_forgets_the_dead_letter(settings, capsys):
    letters = DeadLetters(redis.Redis.from_url(settings.result_backend))
    letters.add("job-1", URL, 8, f"{URL} answered 500")
    assert run_cli(parse("redeliver", "job-1"), lambda: settings) == 0
    assert json.loads(capsys.readouterr().out) == {"queued": "job-1", "url": URL}
    assert letters.entries() == []
    [message] = redis.Redis.from_url(settings.broker_url).lrange("pipeq.webhooks", 0, -1)
    message = json.loads(message)
    assert message["headers"]["task"] == "pipeq.webhook"
    assert json.loads(base64.b64decode(message["body"]))[0] == ["job-1"]  # the URL is read from the job's record


def test_redeliver_of_a_job_without_a_dead_letter_fails(settings, capsys):
    assert run_cli(parse("redeliver", "job-404"), lambda: settings) == 2
    assert capsys.readouterr().err == "pipeq: no failed webhook delivery for job job-404\n"


def test_the_worker_refuses_to_start_without_a_secret_unless_unsigned_is_set(settings, capsys):
    assert run_cli(parse("worker"), lambda: settings) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipeq webhooks worker: no [webhooks] secret is set")
    assert "`pipeq webhooks new-secret`" in err and "unsigned = true" in err


def test_the_worker_refuses_to_start_on_a_taken_metrics_port(settings, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        signing = settings.model_copy(update={"webhooks": Webhooks(unsigned=True), "metrics": Metrics(port=port)})
        assert run_cli(parse("worker"), lambda: signing) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pipeq webhooks worker: the metrics port 127.0.0.1:{port} is already in use")
    assert "PIPEQ_METRICS__PORT" in err
