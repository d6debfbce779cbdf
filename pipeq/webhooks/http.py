"""One webhook POST, safely: public targets only, one deadline for the whole attempt, no redirects, a size limit.

The host is resolved (``socket.getaddrinfo``), every address it resolves to is checked against the table of
special-purpose ranges (:mod:`pipeq.webhooks.addresses`), and the request goes to the checked address (the
``Host`` header and TLS name stay the URL's), so a DNS answer that changes between check and connect cannot
point the request elsewhere. Proxies from the environment are ignored for the same reason.

An attempt has one deadline, ``[webhooks] timeout`` seconds, for everything: resolving, connecting, sending, the
status line and headers, and reading the response. It is enforced by shutting the connection down
(:mod:`pipeq.core.deadline`), so a receiver that answers a byte at a time cannot stretch it.

Redirects are not followed: a 3xx fails the delivery for good, since receivers must answer at the URL they gave
(following one would also hand the signed request to whatever origin the redirect names).

:func:`post` returns on a 2xx and raises :class:`TemporaryFailure` (worth retrying: the deadline, connection
errors, 5xx, 429) or :class:`PermanentFailure` (other statuses, redirects, unsafe targets).
"""

import email.utils
import ipaddress
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from pipeq.config.settings import Webhooks
from pipeq.core.deadline import SocketDeadline
from pipeq.webhooks.addresses import IPAddress, address_refusal

Resolver = Callable[[str, int], list[str]]


class DeliveryError(Exception):
    """A delivery attempt that did not end in a 2xx."""


class TemporaryFailure(DeliveryError):
    """Worth another attempt later; ``retry_after`` is the receiver's own wish (seconds), if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentFailure(DeliveryError):
    """Another attempt would fail the same way: straight to the dead-letter list."""


class UnsafeURL(PermanentFailure):
    """A target pipeq refuses to send to (not http(s), or a non-public address)."""


def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_within(resolve: Resolver, host: str, port: int, seconds: float) -> list[str]:
    """``resolve(host, port)`` in a thread of its own, given up after ``seconds`` (the lookup itself may finish
    later, bounded by the system resolver's own timeouts); TemporaryFailure when it fails or takes too long."""
    outcome: list[list[str] | OSError] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            outcome.append(resolve(host, port))
        except OSError as exc:
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=lookup, name="pipeq-webhook-resolve", daemon=True).start()
    if not done.wait(seconds):
        raise TemporaryFailure(f"cannot resolve {host}: no answer within {seconds:.3g} s")
    found = outcome[0] if outcome else OSError("the lookup failed")
    if isinstance(found, OSError):
        raise TemporaryFailure(f"cannot resolve {host}: {found}")
    return found


@dataclass(frozen=True)
class Target:
    """A checked URL and the address the request goes to."""

    url: httpx.URL
    address: str


class Guard:
    """Decides where webhook requests may go: http(s) URLs whose every address is outside the special-purpose
    ranges (:data:`pipeq.webhooks.addresses.SPECIAL_PURPOSE_RANGES`).

    ``allow_private`` lifts the address check (tests, trusted networks); ``resolve`` is the DNS lookup.
    """

    def __init__(self, allow_private: bool = False, resolve: Resolver = system_resolve) -> None:
        self.allow_private = allow_private
        self.resolve = resolve

    def refusal(self, ip: IPAddress) -> str | None:
        """Why requests to ``ip`` are refused, or None."""
        return None if self.allow_private else address_refusal(ip)

    def check(self, url: str | httpx.URL, resolve_seconds: float = 10.0) -> Target:
        """The target for ``url``; UnsafeURL when refused, TemporaryFailure when its host does not resolve within
        ``resolve_seconds``."""
        try:
            url = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise UnsafeURL(f"{url!s} is not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise UnsafeURL(f"{url} is not an http(s) URL")
        addresses = self._addresses(url, resolve_seconds)
        for ip in addresses:
            reason = self.refusal(ip)
            if reason:
                raise UnsafeURL(f"refusing {url}: {url.host} is {ip} ({reason}); webhooks go to public addresses only")
        return Target(url, str(addresses[0]))

    def _addresses(self, url: httpx.URL, resolve_seconds: float) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(url.host)]
        except ValueError:
            pass
        port = url.port or (443 if url.scheme == "https" else 80)
        found = resolve_within(self.resolve, url.host, port, resolve_seconds)
        if not found:
            raise TemporaryFailure(f"{url.host} resolves to no address")
        return [ipaddress.ip_address(address.split("%")[0]) for address in found]  # drop IPv6 zone ids


def post(url: str, body: bytes, headers: dict[str, str], config: Webhooks, guard: Guard | None = None) -> int:
    """POST ``body`` to ``url`` within ``config.timeout`` seconds in all; the 2xx status it answered."""
    guard = guard or Guard(config.allow_private)
    with SocketDeadline(config.timeout) as deadline:
        target = guard.check(url, deadline.remaining())
        response, head = _exchange(target, body, headers, config, deadline)
    _raise_unless_ok(target.url, response, head)
    return response.status_code


def _exchange(
    target: Target, body: bytes, headers: dict[str, str], config: Webhooks, deadline: SocketDeadline
) -> tuple[httpx.Response, bytes]:
    """Send one request to the target's checked address; the response and at most max_response_bytes of it."""
    pinned = target.url.copy_with(host=target.address)
    extensions = {"trace": deadline.trace}
    if target.url.scheme == "https":
        extensions["sni_hostname"] = target.url.host
    try:
        with httpx.Client(timeout=deadline.remaining(), follow_redirects=False, trust_env=False) as client:
            request = client.build_request(
                "POST",
                pinned,
                content=body,
                headers={**headers, "Host": target.url.netloc.decode()},
                extensions=extensions,
            )
            response = client.send(request, stream=True)
            try:
                return response, _read_head(response, config.max_response_bytes)
            finally:
                response.close()
    except httpx.TransportError as exc:  # timeouts, refused or reset connections, and the deadline's shutdown
        if deadline.passed or isinstance(exc, httpx.TimeoutException):
            raise TemporaryFailure(
                f"no complete answer from {target.url} within {config.timeout:g} s (the attempt's deadline)"
            ) from None
        raise TemporaryFailure(f"{type(exc).__name__} posting to {target.url}: {exc}") from None


def _read_head(response: httpx.Response, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body; the rest is never read."""
    head = b""
    for chunk in response.iter_raw():
        head += chunk
        if len(head) >= limit:
            return head[:limit]
    return head


def _raise_unless_ok(url: httpx.URL, response: httpx.Response, head: bytes) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        where = response.headers.get("location")
        raise PermanentFailure(
            f"{url} answered {status}, a redirect{f' to {where[:200]}' if where else ''}: webhooks follow no"
            " redirects, receivers must answer at the URL given (set the job's webhook to the final URL)"
        )
    said = head[:200].decode(errors="replace").strip()
    message = f"{url} answered {status}" + (f": {said}" if said else "")
    if status == 429 or status >= 500:
        raise TemporaryFailure(message, parse_retry_after(response.headers.get("retry-after")))
    raise PermanentFailure(message)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
