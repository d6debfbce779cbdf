"""One webhook POST, safely: public targets only, redirects checked hop by hop, a timeout, a size limit.

Each hop's host is resolved once (``socket.getaddrinfo``), every address it resolves to is checked, and the
request goes to the checked address (the ``Host`` header and TLS name stay the URL's), so a DNS answer that
changes between check and connect cannot point the request elsewhere. Proxies from the environment are
ignored for the same reason.

:func:`post` returns on a 2xx and raises :class:`TemporaryFailure` (worth retrying: timeouts, connection
errors, 5xx, 429) or :class:`PermanentFailure` (other statuses, unsafe targets, too many redirects).
"""

import email.utils
import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from pipeq.config.settings import Webhooks

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
REDIRECTS = (301, 302, 303, 307, 308)


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


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is no place for a webhook (``"loopback"``, ``"private"``, ...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or ip  # IPv4 hidden inside IPv6 is judged as IPv4
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "not globally routable"


@dataclass(frozen=True)
class Target:
    """A checked hop: its URL and the address the request goes to."""

    url: httpx.URL
    address: str


class Guard:
    """Decides where webhook requests may go: http(s) URLs whose every address is public.

    ``allow_private`` lifts the address check (tests, trusted networks); ``resolve`` is the DNS lookup.
    """

    def __init__(self, allow_private: bool = False, resolve: Resolver = system_resolve) -> None:
        self.allow_private = allow_private
        self.resolve = resolve

    def refusal(self, ip: IPAddress) -> str | None:
        """Why requests to ``ip`` are refused, or None."""
        return None if self.allow_private else address_refusal(ip)

    def check(self, url: str | httpx.URL) -> Target:
        """The target for ``url``; UnsafeURL when refused, TemporaryFailure when its host does not resolve."""
        try:
            url = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise UnsafeURL(f"{url!s} is not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise UnsafeURL(f"{url} is not an http(s) URL")
        addresses = self._addresses(url)
        for ip in addresses:
            reason = self.refusal(ip)
            if reason:
                raise UnsafeURL(f"refusing {url}: {url.host} is {ip} ({reason}); webhooks go to public addresses only")
        return Target(url, str(addresses[0]))

    def _addresses(self, url: httpx.URL) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(url.host)]
        except ValueError:
            pass
        try:
            found = self.resolve(url.host, url.port or (443 if url.scheme == "https" else 80))
        except OSError as exc:
            raise TemporaryFailure(f"cannot resolve {url.host}: {exc}") from None
        if not found:
            raise TemporaryFailure(f"{url.host} resolves to no address")
        return [ipaddress.ip_address(address.split("%")[0]) for address in found]  # drop IPv6 zone ids


def post(url: str, body: bytes, headers: dict[str, str], config: Webhooks, guard: Guard | None = None) -> int:
    """POST ``body`` to ``url``, following up to ``config.max_redirects`` redirects; the final 2xx status."""
    guard = guard or Guard(config.allow_private)
    with httpx.Client(timeout=config.timeout, follow_redirects=False, trust_env=False) as client:
        target = guard.check(url)
        for _ in range(config.max_redirects + 1):
            response, head = _exchange(client, target, body, headers, config)
            location = response.headers.get("location")
            if response.status_code in REDIRECTS and location:
                target = guard.check(target.url.join(location))
                continue
            _raise_unless_ok(target.url, response, head)
            return response.status_code
    raise PermanentFailure(f"more than {config.max_redirects} redirects from {url}")


def _exchange(
    client: httpx.Client, target: Target, body: bytes, headers: dict[str, str], config: Webhooks
) -> tuple[httpx.Response, bytes]:
    """Send one request to the target's checked address; the response and at most max_response_bytes of it."""
    pinned = target.url.copy_with(host=target.address)
    extensions = {"sni_hostname": target.url.host} if target.url.scheme == "https" else {}
    request = client.build_request(
        "POST", pinned, content=body, headers={**headers, "Host": target.url.netloc.decode()}, extensions=extensions
    )
    deadline = time.monotonic() + config.timeout
    try:
        response = client.send(request, stream=True)
        try:
            return response, _read_head(response, config.max_response_bytes, deadline)
        finally:
            response.close()
    except httpx.TimeoutException as exc:
        raise TemporaryFailure(
            f"no answer from {target.url} within {config.timeout} s ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise TemporaryFailure(f"{type(exc).__name__} posting to {target.url}: {exc}") from None


def _read_head(response: httpx.Response, limit: int, deadline: float) -> bytes:
    """Up to ``limit`` bytes of the body; the rest is never read. Too slow a body counts as a timeout."""
    head = b""
    for chunk in response.iter_raw():
        head += chunk
        if len(head) >= limit:
            return head[:limit]
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the response body took too long", request=response.request)
    return head


def _raise_unless_ok(url: httpx.URL, response: httpx.Response, head: bytes) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
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
