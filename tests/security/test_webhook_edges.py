"""Webhook edges (issue 10): one deadline per attempt however slowly a receiver answers, no signed request to
another origin, every special-purpose address range refused, no delivery without a secret, and the URL taken
from the job's record, never from a delivery message."""

import base64
import ipaddress
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from pipeq.config.settings import Settings, Webhooks
from pipeq.core.records import JobRecord, RecordStore, now
from pipeq.webhooks.delivery import DELIVER_TASK, Deliverer, create_webhooks_app
from pipeq.webhooks.http import Guard, PermanentFailure, TemporaryFailure, UnsafeURL, post
from tests.support.receiver import Receiver, Reply

SECRET = "whsec_" + base64.b64encode(b"pipeq webhook edge tests, 32 B!!").decode()
DEADLINE = 1.0
MARGIN = 1.0
"""Seconds an attempt may run past its deadline in these tests: thread wake-ups on a busy machine."""


# -- one deadline per attempt -----------------------------------------------------------------------------


class SlowHeaders:
    """A loopback server that reads a request, then sends its status line and headers one byte every 0.2 s: each
    byte arrives well within any per-read timeout, the whole answer takes about 9 s."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.hung_up = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            try:
                for byte in self.ANSWER:
                    conn.sendall(bytes([byte]))
                    time.sleep(0.2)
            except OSError:
                self.hung_up.set()  # the client closed the connection: what the deadline should do

    def close(self) -> None:
        self.listener.close()
        self._thread.join(15)


@pytest.fixture
def slow_headers() -> Iterator[SlowHeaders]:
    server = SlowHeaders()
    yield server
    server.close()


def test_a_receiver_sending_its_headers_a_byte_at_a_time_is_cut_off_at_the_deadline(slow_headers):
    config = Webhooks(secret=SECRET, timeout=DEADLINE, allow_private=True)
    started = time.monotonic()
    with pytest.raises(TemporaryFailure, match=r"within 1 s \(the attempt's deadline\)"):
        post(slow_headers.url, b"{}", {"Content-Type": "application/json"}, config, Guard(allow_private=True))
    assert time.monotonic() - started < DEADLINE + MARGIN
    assert slow_headers.hung_up.wait(5)


@pytest.fixture
def edge_settings(redis_url, redis_db) -> Settings:
    """Settings on a Redis database pair of this test's own, delivering to loopback, with a short deadline."""
    return Settings(
        broker_url=f"{redis_url}/{redis_db}",
        result_backend=f"{redis_url}/{redis_db + 1}",
        webhooks=Webhooks(secret=SECRET, timeout=DEADLINE, allow_private=True),
    )


def store_final_record(settings: Settings, webhook: str) -> str:
    """A succeeded job whose producer asked for ``webhook``, its result inline."""
    job_id = str(uuid.uuid4())
    record = JobRecord(
        state="succeeded",
        id=job_id,
        task="text-classification",
        model="any",
        submitted_at=now(),
        finished_at=now(),
        result={"label": "ok"},
        webhook=webhook,
    )
    RecordStore(settings.result_backend).write([record])
    return job_id


def test_a_delivery_to_a_slow_receiver_ends_at_the_deadline_while_holding_the_job_lock(edge_settings, slow_headers):
    job_id = store_final_record(edge_settings, slow_headers.url)
    deliverer = Deliverer(edge_settings)
    lock_key = f"pipeq:webhooks:sending:{job_id}"
    lock_ttls: list[int] = []

    def watch_lock() -> None:
        client = redis.Redis.from_url(edge_settings.result_backend)
        while not lock_ttls:
            ttl = client.pttl(lock_key)
            if ttl > 0:
                lock_ttls.append(ttl)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_lock, daemon=True)
    watcher.start()
    started = time.monotonic()
    with pytest.raises(TemporaryFailure, match="the attempt's deadline"):
        deliverer.attempt(job_id)
    assert time.monotonic() - started < DEADLINE + MARGIN
    watcher.join(5)
    assert lock_ttls and lock_ttls[0] >= DEADLINE * 1000  # no second delivery can start while this one may run


# -- no signed request to another origin ------------------------------------------------------------------


def test_a_redirect_to_another_origin_is_not_followed(edge_settings):
    with Receiver() as elsewhere, Receiver() as receiver:
        receiver.script(Reply(307, headers={"Location": elsewhere.url}))
        job_id = store_final_record(edge_settings, receiver.url)
        with pytest.raises(PermanentFailure, match="webhooks follow no redirects"):
            Deliverer(edge_settings).attempt(job_id)
        assert len(receiver.requests) == 1
        assert elsewhere.requests == []  # never saw the webhook-* headers, nor the body


# -- special-purpose address ranges -----------------------------------------------------------------------

SPECIAL_PURPOSE = [
    # IANA IPv4 Special-Purpose Address Registry, multicast and reserved: (range, an address in it)
    ("0.0.0.0/8", "0.1.2.3"),
    ("10.0.0.0/8", "10.20.30.40"),
    ("100.64.0.0/10", "100.100.100.100"),
    ("127.0.0.0/8", "127.1.2.3"),
    ("169.254.0.0/16", "169.254.169.254"),
    ("172.16.0.0/12", "172.31.255.254"),
    ("192.0.0.0/24", "192.0.0.9"),
    ("192.0.2.0/24", "192.0.2.1"),
    ("192.31.196.0/24", "192.31.196.1"),
    ("192.52.193.0/24", "192.52.193.1"),
    ("192.88.99.0/24", "192.88.99.1"),
    ("192.168.0.0/16", "192.168.1.1"),
    ("192.175.48.0/24", "192.175.48.1"),
    ("198.18.0.0/15", "198.19.0.1"),
    ("198.51.100.0/24", "198.51.100.7"),
    ("203.0.113.0/24", "203.0.113.7"),
    ("224.0.0.0/4", "239.1.2.3"),
    ("240.0.0.0/4", "250.1.2.3"),
    ("255.255.255.255/32", "255.255.255.255"),
    # IANA IPv6 Special-Purpose Address Registry, multicast, and what lies outside global unicast
    ("::/128", "::"),
    ("::1/128", "::1"),
    ("::ffff:0:0/96 (loopback inside)", "::ffff:127.0.0.1"),
    ("::ffff:0:0/96 (private inside)", "::ffff:10.0.0.1"),
    ("::ffff:0:0/96 (link-local inside)", "::ffff:169.254.169.254"),
    ("::/96 (IPv4-compatible)", "::7f00:1"),
    ("64:ff9b::/96", "64:ff9b::808:808"),  # NAT64 of a public address: still refused
    ("64:ff9b:1::/48", "64:ff9b:1::a00:1"),
    ("100::/64", "100::1"),
    ("100:0:0:1::/64", "100:0:0:1::1"),
    ("2001::/23 (Teredo)", "2001::1"),
    ("2001::/23 (ORCHIDv2)", "2001:20::1"),
    ("2001::/23 (AMT)", "2001:3::1"),
    ("2001:db8::/32", "2001:db8::1"),
    ("2002::/16", "2002:808:808::1"),  # 6to4 of a public address: still refused
    ("2620:4f:8000::/48", "2620:4f:8000::1"),
    ("3fff::/20", "3fff::1"),
    ("5f00::/16", "5f00::1"),
    ("fc00::/7", "fd12:3456::1"),
    ("fe80::/10", "fe80::1"),
    ("fec0::/10", "fec0::1"),
    ("ff00::/8", "ff02::1"),
    ("outside 2000::/3", "4000::1"),
]


@pytest.mark.parametrize(("network", "address"), SPECIAL_PURPOSE, ids=[network for network, _ in SPECIAL_PURPOSE])
def test_every_special_purpose_range_is_refused(network, address):
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeURL, match="webhooks go to public addresses only"):
        Guard().check(f"http://{host}:8080/hook")


@pytest.mark.parametrize(("network", "address"), SPECIAL_PURPOSE, ids=[network for network, _ in SPECIAL_PURPOSE])
def test_a_name_resolving_into_a_special_purpose_range_is_refused(network, address):
    resolve = {"hooks.example.com": ["93.184.216.34", address]}.__getitem__
    with pytest.raises(UnsafeURL, match="public addresses only"):
        Guard(resolve=lambda host, port: resolve(host)).check("https://hooks.example.com/hook")


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    host = f"[{address}]" if ":" in address else address
    assert ipaddress.ip_address(Guard().check(f"https://{host}/hook").address) == ipaddress.ip_address(address)


# -- a secret, or no delivery -----------------------------------------------------------------------------


def test_without_a_secret_nothing_is_delivered_and_the_dead_letter_says_what_to_set(edge_settings, receiver):
    unsigned = edge_settings.model_copy(update={"webhooks": edge_settings.webhooks.model_copy(update={"secret": None})})
    job_id = store_final_record(unsigned, receiver.url)
    create_webhooks_app(unsigned).tasks[DELIVER_TASK].apply(args=[job_id])  # in this thread
    time.sleep(0.2)  # room for a stray POST, were there one
    assert receiver.requests == []
    entry = json.loads(redis.Redis.from_url(unsigned.result_backend).hget("pipeq:webhooks:failed", job_id))
    assert entry["attempts"] == 1
    assert "no [webhooks] secret is set" in entry["last_error"]
    assert "`pipeq webhooks new-secret`" in entry["last_error"] and "unsigned = true" in entry["last_error"]


def test_unsigned_deliveries_only_when_the_config_says_so(edge_settings, receiver):
    webhooks = edge_settings.webhooks.model_copy(update={"secret": None, "unsigned": True})
    unsigned = edge_settings.model_copy(update={"webhooks": webhooks})
    job_id = store_final_record(unsigned, receiver.url)
    assert Deliverer(unsigned).attempt(job_id)
    [request] = receiver.requests
    assert request.headers["webhook-id"] == job_id
    assert "webhook-signature" not in request.headers


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiving:
        yield receiving


# -- the URL comes from the job's record ------------------------------------------------------------------


def test_a_delivery_message_naming_another_url_is_refused(edge_settings, receiver):
    with Receiver() as attacker:
        job_id = store_final_record(edge_settings, receiver.url)
        create_webhooks_app(edge_settings).tasks[DELIVER_TASK].apply(args=[job_id, attacker.url])
        time.sleep(0.2)
        assert attacker.requests == [] and receiver.requests == []
    entry = json.loads(redis.Redis.from_url(edge_settings.result_backend).hget("pipeq:webhooks:failed", job_id))
    assert entry["url"] == receiver.url
    assert "deliveries go only to the URL in the job's record" in entry["last_error"]
