"""The soak's webhook figures: a completed webhook never received counts as dead-lettered when pipeq gave it up
(kept for redelivery) and as missing (lost) only when it is nowhere; where the broker still holds a lost job."""

from types import SimpleNamespace

import redis

from benchmarks.soak_measure import Receipt, message_whereabouts, webhook_figures


def receipt(job_id: str, event: str = "completed", sequence: int | None = None, webhook_id: str | None = None):
    return Receipt(0.0, webhook_id or job_id, job_id, event, sequence, "succeeded", "{}")


def test_unreceived_webhooks_are_dead_lettered_or_missing_and_repeats_are_counted():
    done = SimpleNamespace(done=True)
    records = {job_id: done for job_id in ("a", "b", "c", "d", "e")} | {"queued": SimpleNamespace(done=False)}
    receipts = [receipt("a"), receipt("a"), receipt("b"), receipt("b", webhook_id="b-other"), receipt("e")]
    figures = webhook_figures(set(records), records, receipts, dead_lettered={"c", "e"})
    assert figures["expected"] == 5  # the queued job is not due a webhook yet
    assert (figures["dead_lettered"], figures["dead_lettered_ids"]) == (1, ["c"])
    assert (figures["missing"], figures["missing_ids"]) == (1, ["d"])
    assert figures["dead_letters_received"] == 1  # e: given up, though the receiver had it
    assert (figures["redelivered"], figures["duplicate"]) == (1, 1)  # a twice with one id; b under two ids


def test_the_whereabouts_of_messages_name_every_list_and_hash_holding_them(redis_url, redis_db):
    broker = redis.Redis.from_url(f"{redis_url}/{redis_db}")
    broker.lpush("texts", b'{"headers": {"id": "job-queued"}}', b'{"headers": {"id": "job-twice"}}')
    broker.lpush("pipeq.inflight.c1.texts", b'{"headers": {"id": "job-twice"}}')
    broker.hset("unacked", "tag-1", b'[{"headers": {"id": "job-held"}}, "", "texts"]')
    broker.set("pipeq:job:job-gone", b"job-gone")  # a string (a record) is no message
    found = message_whereabouts(broker, ["job-queued", "job-twice", "job-held", "job-gone"])
    assert {job_id: sorted(keys) for job_id, keys in found.items()} == {
        "job-queued": ["texts"],
        "job-twice": ["pipeq.inflight.c1.texts", "texts"],
        "job-held": ["unacked"],
        "job-gone": [],
    }
