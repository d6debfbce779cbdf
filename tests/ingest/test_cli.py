"""``pipeq ingest``: its arguments, and every source it names running until SIGTERM."""

import argparse
import functools
import json
import os
import signal
import socket
import threading
import uuid

import httpx
import pytest

from devtools.local_services import free_port
from pipeq.config.settings import Metrics
from pipeq.core.storage import sqs_client
from pipeq.ingest import cli
from pipeq.ingest.cli import add_cli, run_cli
from tests.support.s3_events import put, redis_entry, webhook_body
from tests.support.waiting import wait_until

POSTED = "s3-97f93c1ee1b7a1b04cfff96013f2267f28e22307"
PUSHED = "s3-775915f6b92f3d2c176ef7c4f69608b69e49dd5b"
POLLED = "s3-59d493bfabade1c82d8c38d45544af4c40bb6f5e"
TOKEN = "an ingest test token, 16+ characters"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pipeq")
    add_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(["ingest", *argv])


def test_the_arguments_name_the_sources():
    args = parse("--redis-list", "events", "--http", ":8080", "--poll", "2.5", "--backfill", "--auth-token", "t")
    assert (args.redis_list, args.http, args.poll, args.backfill, args.auth_token) == (
        "events",
        ("0.0.0.0", 8080),
        2.5,
        True,
        "t",
    )
    assert parse("--http", "127.0.0.1:9000").http == ("127.0.0.1", 9000)
    assert parse("--sqs", "https://sqs.eu-west-1.amazonaws.com/123456789012/a", "--sqs", "q2").sqs == [
        "https://sqs.eu-west-1.amazonaws.com/123456789012/a",
        "q2",
    ]
    assert parse("--poll", "1").sqs is None
    for wrong in ("nowhere", "host:port", "8080"):
        with pytest.raises(SystemExit):
            parse("--http", wrong)
    assert parse("--poll", "1").poll_full_every == 1 and parse("--poll-full-every", "10").poll_full_every == 10
    for wrong in ("0", "-1", "1.5", "10001", "x"):
        with pytest.raises(SystemExit):
            parse("--poll-full-every", wrong)


def test_the_auth_token_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("PIPEQ_INGEST_AUTH_TOKEN", "from-env")
    assert parse("--http", ":1").auth_token == "from-env"
    monkeypatch.delenv("PIPEQ_INGEST_AUTH_TOKEN")
    assert parse("--http", ":1").auth_token is None


def test_the_command_needs_rules_and_a_source(offline, settings, capsys):
    assert run_cli(parse("--poll", "1"), settings) == 2
    assert "no [[ingest]] rules" in capsys.readouterr().err
    assert run_cli(parse(), offline.settings) == 2
    assert "--redis-list, --http, --sqs or --poll" in capsys.readouterr().err


def test_the_command_needs_an_id_key_and_says_how_to_make_one(offline, capsys):
    keyless = offline.settings.model_copy(update={"ingest_id_key": None})
    assert run_cli(parse("--poll", "1"), keyless) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipeq ingest: no ingest_id_key is set")
    assert "PIPEQ_INGEST_ID_KEY" in err and "secrets.token_urlsafe(32)" in err


def test_the_command_refuses_an_endpoint_others_reach_without_a_token(offline, capsys):
    assert run_cli(parse("--http", f"0.0.0.0:{free_port()}"), offline.settings) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipeq ingest: refusing to accept events on 0.0.0.0:")
    assert "PIPEQ_INGEST_AUTH_TOKEN" in err and "127.0.0.1" in err


@pytest.mark.parametrize("bucket_name", ["ingest-cli-sources"])
def test_the_command_runs_every_source_it_names_until_sigterm(offline, s3, bucket):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    posted = put(s3, bucket, "reports/a.txt", b"posted")
    offline.broker.rpush("events", redis_entry(put(s3, bucket, "notes/b", b"pushed")))
    put(s3, bucket, "notes/c", b"found by polling")
    outcome: dict = {}

    def drive() -> None:
        try:
            wait_until(lambda: _up(url), message="the HTTP endpoint did not come up")
            outcome["posted"] = httpx.post(url, json=webhook_body(posted), headers={"Authorization": f"Bearer {TOKEN}"})
            wait_until(lambda: len(offline.queued()) == 3, message="three jobs were not queued")
            wait_until(lambda: offline.broker.llen("events") + offline.broker.llen("events:processing") == 0)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    driver.start()
    args = parse("--redis-list", "events", "--http", f"127.0.0.1:{port}", "--poll", "0.1", "--backfill")
    args.auth_token = TOKEN
    rc = run_cli(args, offline.settings)
    driver.join()
    assert rc == 0
    assert (outcome["posted"].status_code, outcome["posted"].json()) == (200, {"jobs": [POSTED]})
    assert sorted(job["id"] for job in offline.queued()) == sorted([POSTED, PUSHED, POLLED])
    with pytest.raises(httpx.TransportError):
        httpx.get(url)  # the endpoint is closed


def test_the_command_reads_every_sqs_queue_it_names_until_sigterm(offline, s3, bucket, settings, monkeypatch):
    sqs = sqs_client(settings)
    urls = [sqs.create_queue(QueueName=f"ingest-cli-{uuid.uuid4().hex[:12]}")["QueueUrl"] for _ in range(2)]
    for n, url in enumerate(urls):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"Records": [put(s3, bucket, f"notes/{n}", b"sqs")]}))
    monkeypatch.setattr(cli, "SqsSource", functools.partial(cli.SqsSource, wait_s=1))  # a prompt stop

    def drive() -> None:
        try:
            wait_until(lambda: len(offline.queued()) == 2, message="two jobs were not queued")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    driver.start()
    rc = run_cli(parse("--sqs", urls[0], "--sqs", urls[1]), offline.settings)
    driver.join()
    assert rc == 0
    assert sorted(job["input"]["uri"] for job in offline.queued()) == [f"s3://{bucket}/notes/{n}" for n in range(2)]
    for url in urls:
        sqs.delete_queue(QueueUrl=url)
    sqs.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def test_a_taken_metrics_port_stops_the_start_naming_the_port(offline, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = offline.settings.model_copy(update={"metrics": Metrics(port=port)})
        assert run_cli(parse("--poll", "1"), settings) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pipeq ingest: the metrics port 127.0.0.1:{port} is already in use")
    assert "PIPEQ_METRICS__PORT" in err
