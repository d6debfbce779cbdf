"""One webhook POST on its own: the SSRF guard, no redirects, response limits, the attempt's deadline and
Retry-After, against a real receiver on loopback."""

import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pipeq.config.settings import Webhooks
from pipeq.webhooks.http import Guard, PermanentFailure, TemporaryFailure, UnsafeURL, parse_retry_after, post
from tests.support.receiver import Receiver, Reply


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiving:
        yield receiving


# -- the SSRF guard ---------------------------------------------------------------------------------------

FAKE_DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "localhost": ["127.0.0.1", "::1"],
    "mixed.example.com": ["93.184.216.34", "10.1.2.3"],
    "rebound.example.com": ["192.168.1.10"],
    "metadata.internal": ["169.254.169.254"],
    "v6.example.com": ["2606:4700:4700::1111"],
}


def fake_resolve(host: str, port: int) -> list[str]:
    if host not in FAKE_DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return FAKE_DNS[host]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://localhost:8080/hook", "loopback"),
        ("http://10.0.0.1/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://0.0.0.0/hook", "'this network'"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://100.64.0.1/hook", "shared address space"),
        ("http://[fc00::1]/hook", "private"),
        ("http://mixed.example.com/hook", "10.1.2.3 (private, 10.0.0.0/8)"),
        ("http://rebound.example.com/hook", "private"),
        ("ftp://hooks.example.com/hook", "not an http(s) URL"),
        ("file:///etc/passwd", "not an http(s) URL"),
    ],
)
def test_the_guard_refuses_non_public_targets(url, reason):
    with pytest.raises(UnsafeURL, match=re.escape(reason)):
        Guard(resolve=fake_resolve).check(url)


def test_the_guard_allows_public_targets_and_pins_the_checked_address():
    assert Guard(resolve=fake_resolve).check("https://hooks.example.com/in").address == "93.184.216.34"
    assert Guard(resolve=fake_resolve).check("http://v6.example.com/in").address == "2606:4700:4700::1111"
    assert Guard(resolve=fake_resolve).check("http://8.8.8.8:8080/in").address == "8.8.8.8"
    assert Guard(allow_private=True, resolve=fake_resolve).check("http://localhost/in").address == "127.0.0.1"


def test_a_host_that_does_not_resolve_is_a_temporary_failure():
    with pytest.raises(TemporaryFailure, match=r"cannot resolve nowhere\.example\.com"):
        Guard(resolve=fake_resolve).check("http://nowhere.example.com/in")


class ReceiverCountsAsPublic(Guard):
    """The real guard, except that the loopback receiver stands in for a public host."""

    def refusal(self, ip):
        return None if str(ip) == "127.0.0.1" else super().refusal(ip)


def stub_resolve(host: str, port: int) -> list[str]:
    return {"hooks.example.com": ["127.0.0.1"], "metadata.internal": ["169.254.169.254"]}[host]


STRICT = Webhooks(allow_private=False, timeout=2, max_response_bytes=1024)


def post_json(url: str, config: Webhooks = STRICT) -> int:
    headers = {"Content-Type": "application/json"}
    return post(url, b'{"id":"job-1"}', headers, config, ReceiverCountsAsPublic(False, stub_resolve))


@pytest.mark.parametrize(
    "location",
    ["/moved", "http://metadata.internal/latest/meta-data/", "http://10.0.0.1/steal", "http://[::1]:{port}/hook"],
)
def test_a_redirect_is_not_followed_and_fails_for_good(receiver, location):
    receiver.script(Reply(307, headers={"Location": location.format(port=receiver.port)}))
    with pytest.raises(PermanentFailure, match="webhooks follow no redirects, receivers must answer at the URL given"):
        post_json(f"http://hooks.example.com:{receiver.port}/hook")
    assert len(receiver.requests) == 1


# -- limits, timeouts, Retry-After ------------------------------------------------------------------------


def test_a_huge_response_is_not_read_past_the_limit(receiver):
    receiver.script(Reply(200, body=b"x" * 32_000_000), Reply(500, body=b"e" * 5_000_000))
    started = time.monotonic()
    assert post_json(receiver.url) == 200
    with pytest.raises(TemporaryFailure) as failed:
        post_json(receiver.url)
    assert time.monotonic() - started < 5
    assert len(str(failed.value)) < 300
    deadline = time.monotonic() + 5
    while receiver.broken_writes < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert receiver.broken_writes == 2  # we hung up; the receiver could not send the rest


def test_a_slow_receiver_times_out_as_a_temporary_failure(receiver):
    receiver.script(Reply(200, delay=1.5))
    started = time.monotonic()
    with pytest.raises(TemporaryFailure, match=r"within 0\.3 s"):
        post_json(receiver.url, STRICT.model_copy(update={"timeout": 0.3}))
    assert time.monotonic() - started < 1.2


def test_retry_after_is_read_as_seconds_or_an_http_date():
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(format_datetime(moment + timedelta(seconds=30), usegmt=True), now=moment) == 30.0
    assert parse_retry_after(format_datetime(moment - timedelta(seconds=30), usegmt=True), now=moment) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_a_slow_dns_answer_counts_against_the_deadline():
    def slow_resolve(host: str, port: int) -> list[str]:
        time.sleep(2)
        return ["93.184.216.34"]

    with pytest.raises(TemporaryFailure, match=r"cannot resolve slow\.example\.com: no answer within 0\.2 s"):
        Guard(resolve=slow_resolve).check("http://slow.example.com/in", resolve_seconds=0.2)
