"""Redis clients for pipeq's URLs: one Redis server, or the primary of a group that Redis Sentinel watches.

``redis://``, ``rediss://`` and ``unix://`` URLs are redis-py's own. A Sentinel URL is kombu's: the sentinels, each
as ``sentinel://[[user]:password@]host[:port]`` (port 26379 by default), joined by ``;``, the database as a path on
any of them, and two query parameters, on any of them: ``master_name`` (the group sentinels know it by; default
``mymaster``) and ``sentinel_password`` (where the sentinels ask for one). For example::

    sentinel://:secret@s1:26379/0?master_name=pipeq;sentinel://s2:26379;sentinel://s3:26379

The user and password are the primary's. Clients ask the sentinels which server is the primary when they connect,
and again after a failover closes their connections, so one URL serves before and after it.
"""

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

SENTINEL_SCHEME = "sentinel"
REDIS_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
SENTINEL_PORT = 26379
DEFAULT_MASTER_NAME = "mymaster"
MAX_SENTINELS = 16
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
QUERY_KEYS = ("master_name", "sentinel_password")


@dataclass(frozen=True)
class SentinelGroup:
    """Where a Sentinel URL points: its sentinels, the primary's name among them, database and credentials."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str = DEFAULT_MASTER_NAME
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def master_options(self) -> dict[str, Any]:
        """The connection options of the primary (kombu's transport options take the same)."""
        options: dict[str, Any] = {"db": self.db}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        return options

    def sentinel_options(self, **options: Any) -> dict[str, Any]:
        """The connection options of the sentinels themselves."""
        return {**options, **({"password": self.sentinel_password} if self.sentinel_password else {})}

    def describe(self) -> str:
        """Where it points, without credentials: fit for messages and logs."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"sentinel://{hosts}/{self.db} (primary {self.master_name!r})"


def is_sentinel_url(url: str) -> bool:
    return url.split(";", 1)[0].strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelGroup:
    """The group a Sentinel URL names (see the module docstring); ValueError says what is wrong with one."""
    parts = [part.strip() for part in url.split(";") if part.strip()]
    if not parts:
        raise ValueError("a sentinel:// URL names no sentinel: give sentinel://host:port[;sentinel://host:port...]")
    if len(parts) > MAX_SENTINELS:
        raise ValueError(f"a sentinel:// URL names {len(parts)} sentinels; at most {MAX_SENTINELS} are accepted")
    sentinels: list[tuple[str, int]] = []
    found: dict[str, Any] = {}
    for part in parts:
        split = urlsplit(part)
        if split.scheme.lower() != SENTINEL_SCHEME or not split.hostname:
            raise ValueError(f"{_safe(part)!r} is not sentinel://host[:port][/db]: every part of the URL must be one")
        try:
            port = split.port or SENTINEL_PORT
        except ValueError:
            raise ValueError(f"{_safe(part)!r} has a port that is not a number from 1 to 65535") from None
        sentinels.append((split.hostname, port))
        path = split.path.strip("/")
        if path:
            if not path.isdigit() or int(path) > 10_000:
                raise ValueError(f"{_safe(part)!r}: the path must be a database number (0, 1, ...), not {path!r}")
            found.setdefault("db", int(path))
        if split.password is not None:
            found.setdefault("password", unquote(split.password))
            if split.username:
                found.setdefault("username", unquote(split.username))
        for key, values in parse_qs(split.query, keep_blank_values=True).items():
            if key not in QUERY_KEYS:
                raise ValueError(f"a sentinel:// URL takes {' and '.join(QUERY_KEYS)} as parameters, not {key!r}")
            found.setdefault(key, values[-1])
    master_name = found.pop("master_name", DEFAULT_MASTER_NAME)
    if not NAME.fullmatch(master_name):
        raise ValueError(f"master_name {master_name!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    return SentinelGroup(tuple(sentinels), master_name, **found)


def kombu_sentinel_url(url: str) -> str:
    """``url`` as kombu's Sentinel transport reads it: without the query, which pipeq passes as transport options."""
    return ";".join(part.strip().split("?", 1)[0] for part in url.split(";") if part.strip())


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis at ``url`` (any of :data:`REDIS_SCHEMES`); ``options`` are redis-py's (timeouts,
    retry), applied to the sentinels too."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    group = parse_sentinel_url(url)
    sentinel_options = group.sentinel_options(**_timeouts(options))
    sentinel = redis.sentinel.Sentinel(list(group.sentinels), sentinel_kwargs=sentinel_options, **_timeouts(options))
    return sentinel.master_for(group.master_name, **group.master_options(), **options)


def async_redis_client(url: str, **options: Any) -> redis.asyncio.Redis:
    """:func:`redis_client` for asyncio."""
    if not is_sentinel_url(url):
        return redis.asyncio.Redis.from_url(url, **options)
    group = parse_sentinel_url(url)
    sentinel_options = group.sentinel_options(**_timeouts(options))
    sentinel = redis.asyncio.sentinel.Sentinel(
        list(group.sentinels), sentinel_kwargs=sentinel_options, **_timeouts(options)
    )
    return sentinel.master_for(group.master_name, **group.master_options(), **options)


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis server or Sentinel group (one of :data:`REDIS_SCHEMES`)."""
    return urlsplit(url.split(";", 1)[0].strip()).scheme.lower() in REDIS_SCHEMES


def redis_address(url: str) -> str:
    """Where a Redis URL points, without its credentials: fit for messages and logs."""
    if is_sentinel_url(url):
        try:
            return parse_sentinel_url(url).describe()
        except ValueError:
            return "sentinel://? (not a valid Sentinel URL)"
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"


def _timeouts(options: dict[str, Any]) -> dict[str, Any]:
    return {key: options[key] for key in ("socket_timeout", "socket_connect_timeout") if key in options}


def _safe(part: str) -> str:
    """A part of a URL with any password replaced, for error messages."""
    return re.sub(r"//([^@/]*):[^@/]*@", r"//\1:***@", part)
