"""What the broker holds, read in one step (a Lua script): a message moving between its queue, an in-flight list
and the unacked hash, as in a redelivery loop, is always seen in one of them."""

import time

import redis

from pipeq.config.settings import Settings
from pipeq.core.broker import REGISTRY
from tests.support.waiting import wait_until

_HELD = """
local held = {redis.call('LLEN', KEYS[1]), redis.call('HLEN', 'unacked'), 0}
for _, inflight in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  held[3] = held[3] + redis.call('LLEN', inflight)
end
return held
"""


def held_messages(settings: Settings, queue: str = "pipeq") -> dict[str, int]:
    """Messages of ``queue`` queued, unacked and in pipeq's in-flight lists, counted atomically."""
    queued, unacked, inflight = redis.Redis.from_url(settings.broker_url).eval(_HELD, 2, queue, REGISTRY)
    return {"queued": queued, "unacked": unacked, "in flight": inflight}


def wait_for_no_messages(settings: Settings, queue: str = "pipeq", timeout: float = 30, steady_s: float = 1.0) -> None:
    """Until the broker holds no message of ``queue``, and still none ``steady_s`` later: each was acked, none
    requeued."""
    wait_until(
        lambda: not any(held_messages(settings, queue).values()),
        timeout,
        message=lambda: f"the broker still holds messages: {held_messages(settings, queue)}",
    )
    time.sleep(steady_s)
    assert not any((held := held_messages(settings, queue)).values()), f"messages came back: {held}"
