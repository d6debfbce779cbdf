"""Redis and Sentinel URLs: what they name, what is refused, and the transport Celery is given."""

import pytest

from pipeq.core.broker import Channel, SentinelChannel
from pipeq.core.messaging import broker_transport, make_celery
from pipeq.core.redis_client import (
    SentinelGroup,
    is_redis_url,
    kombu_sentinel_url,
    parse_sentinel_url,
    redis_address,
    redis_client,
)

URL = "sentinel://:s3cret@s1:26380/2?master_name=pipeq;sentinel://s2;sentinel://s3:26381"


def test_a_sentinel_url_names_its_sentinels_group_database_and_password():
    group = parse_sentinel_url(URL)
    assert group == SentinelGroup(
        sentinels=(("s1", 26380), ("s2", 26379), ("s3", 26381)), master_name="pipeq", db=2, password="s3cret"
    )
    assert group.master_options() == {"db": 2, "password": "s3cret"}
    assert redis_address(URL) == "sentinel://s1:26380,s2:26379,s3:26381/2 (primary 'pipeq')"
    assert "s3cret" not in redis_address(URL)


def test_defaults_and_the_sentinels_own_password():
    group = parse_sentinel_url("sentinel://s1;sentinel://s2?sentinel_password=p%40ss")
    assert (group.master_name, group.db, group.password) == ("mymaster", 0, None)
    assert group.sentinel_options(socket_timeout=1) == {"socket_timeout": 1, "password": "p@ss"}


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("sentinel://", "is not sentinel://host"),
        ("sentinel://s1;redis://s2", "every part of the URL must be one"),
        ("sentinel://s1:99999", "port"),
        ("sentinel://s1:port", "port"),
        ("sentinel://s1/zero", "database number"),
        ("sentinel://s1/1/2", "database number"),
        ("sentinel://s1?master_name=", "master_name"),
        ("sentinel://s1?master_name=a%20b", "master_name"),
        ("sentinel://s1?master_name=" + "m" * 65, "master_name"),
        ("sentinel://s1?socket_timeout=0", "not 'socket_timeout'"),
        (";".join(["sentinel://s"] * 17), "at most 16"),
        ("sentinel://:pw@s1:x", "port"),
    ],
)
def test_bad_sentinel_urls_are_refused_with_what_is_wrong(url, complaint):
    with pytest.raises(ValueError, match=complaint) as caught:
        parse_sentinel_url(url)
    assert "pw" not in str(caught.value).replace("pw@", "")  # a password is never repeated


def test_which_urls_name_redis():
    assert all(map(is_redis_url, ["redis://h/0", "rediss://h", "unix:///s.sock", URL, "SENTINEL://s1"]))
    assert not any(map(is_redis_url, ["amqp://guest@h//", "http://h", ""]))


def test_celery_gets_pipeqs_sentinel_transport_with_the_group_in_its_options(settings):
    url, transport, options = broker_transport(URL)
    assert url == kombu_sentinel_url(URL) == "sentinel://:s3cret@s1:26380/2;sentinel://s2;sentinel://s3:26381"
    assert transport == "pipeq.core.broker:SentinelTransport" and options == {"master_name": "pipeq"}
    app = make_celery(settings.model_copy(update={"broker_url": URL}))
    assert app.conf.broker_transport_options["master_name"] == "pipeq"
    assert app.conf.broker_transport_options["visibility_timeout"] == settings.dead_after_s
    assert app.connection_for_write().transport.Channel is SentinelChannel
    assert hasattr(SentinelChannel.QoS, "touch")  # the keep-alive, as on plain Redis


@pytest.mark.parametrize(
    ("url", "channel"),
    [(URL, SentinelChannel), ("redis://r1:6379/0;redis://r2:6379/0", Channel)],
    ids=["sentinel", "redis"],
)
def test_a_worker_that_fails_over_to_the_next_url_keeps_pipeqs_transport(settings, url, channel):
    """kombu's failover to the next of several broker URLs takes the transport from that URL's scheme: the schemes
    name pipeq's transports, so the reliable fetch and the keep-alive survive it (the chaos soak lost jobs to
    kombu's stock transport after failovers)."""
    connection = make_celery(settings.model_copy(update={"broker_url": url})).connection_for_read()
    seen = [connection.transport.Channel]
    connection.maybe_switch_next()  # as kombu does when the connection is lost
    seen.append(connection.transport.Channel)
    connection.maybe_switch_next()
    seen.append(connection.transport.Channel)
    assert seen == [channel] * 3
    assert connection.hostname in {"s1", "s2", "s3", "r1", "r2"}


def test_a_sentinel_client_asks_the_sentinels_for_the_primary():
    client = redis_client(URL, socket_timeout=0.5)
    pool = client.connection_pool
    assert pool.service_name == "pipeq" and pool.connection_kwargs["db"] == 2
    assert [(s.connection_pool.connection_kwargs["host"]) for s in pool.sentinel_manager.sentinels] == [
        "s1",
        "s2",
        "s3",
    ]
