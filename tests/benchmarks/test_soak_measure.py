"""The soak's webhook figures: a completed webhook never received counts as dead-lettered when pipeq gave it up
(kept for redelivery) and as missing (lost) only when it is nowhere."""

from types import SimpleNamespace

from benchmarks.soak_measure import Receipt, webhook_figures


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
