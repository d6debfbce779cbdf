"""Which IP addresses a webhook may go to: an explicit table of the IANA special-purpose ranges, nothing else.

The table follows the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and later), plus
multicast, the deprecated site-local and IPv4-compatible ranges, and, for IPv6, everything outside global
unicast (2000::/3). It is spelled out here rather than taken from ``ipaddress``'s ``is_private`` /
``is_global``, whose answers change between Python versions. An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``)
is judged by the IPv4 address inside it.
"""

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SPECIAL_PURPOSE_RANGES: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "'this network'"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.31.196.0/24", "AS112 DNS sink"),
    ("192.52.193.0/24", "AMT relay anycast"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112 direct delegation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "limited broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b::/96", "IPv4/IPv6 translation (NAT64)"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy IPv6 prefix"),
    ("2001::/23", "IETF protocol assignments (Teredo, ORCHID, AS112, AMT, ...)"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("2620:4f:8000::/48", "AS112 direct delegation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing (SRv6) SIDs"),
    ("fc00::/7", "unique-local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
"""(network, what it is): no webhook goes to an address in any of these."""

GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

_TABLE: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(network), kind) for network, kind in SPECIAL_PURPOSE_RANGES
)


def address_refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is no place for a webhook (``"loopback"``, ``"private"``, ...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:  # fe80::1%eth0: the zone says which interface, not which address
            ip = ipaddress.IPv6Address(str(ip).split("%")[0])
        if ip in IPV4_MAPPED:
            mapped = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            reason = address_refusal(mapped)
            return f"IPv4-mapped {mapped}, {reason}" if reason else None
    for network, kind in _TABLE:
        if ip.version == network.version and ip in network:
            return f"{kind}, {network}"
    if isinstance(ip, ipaddress.IPv6Address) and ip not in GLOBAL_UNICAST_V6:
        return f"not global unicast, outside {GLOBAL_UNICAST_V6}"
    return None
