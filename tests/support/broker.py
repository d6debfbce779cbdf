"""What the broker holds, read in one step (a Lua script): a message moving between its queue, an in-flight list
and the unacked hash, as in a redelivery loop, is always seen in one of them."""

import time

import redis

from pipeq.config.settings import Settings
from pipeq.core.broker import REGISTRY, WAKE_TOKEN, priority_lists
from tests.support.waiting import wait_until

_HELD = """
-- KEYS: the registry of in-flight lists, then the queue's lists (one per priority); ARGV[1]: the wake token
local held = {0, redis.call('HLEN', 'unacked'), 0}
for i = 2, #KEYS do
  held[1] = held[1] + redis.call('LLEN', KEYS[i]) - #redis.call('LPOS', KEYS[i], ARGV[1], 'COUNT', 0)
end
for _, inflight in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  held[3] = held[3] + redis.call('LLEN', inflight)
end
return held
"""


def held_messages(settings: Settings, queue: str = "pipeq") -> dict[str, int]:
    """Messages of ``queue`` queued (of every priority; wake tokens are none), unacked and in pipeq's in-flight
    lists, counted atomically."""
    lists = list(priority_lists(queue).values())
    with redis.Redis.from_url(settings.broker_url) as client:
        queued, unacked, inflight = client.eval(_HELD, 1 + len(lists), REGISTRY, *lists, WAKE_TOKEN)
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
