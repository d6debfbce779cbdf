"""Client.list: newest first, stable cursors, filters, bounds, and an index that stays within result_ttl."""

from datetime import UTC, datetime, timedelta

import pytest

from pipeq.core import job_index
from pipeq.core.job_index import ALL_KEY, model_key
from pipeq.core.records import JobRecord, now
from pipeq.producer import Client, InvalidJob
from pipeq.producer import client as client_module
from tests.support.settings import make_settings, model_name

TEXT = "text-classification"
MODEL = model_name(TEXT)
OTHER = "not-cached"  # the test catalogue's second text-classification model


@pytest.fixture
def lister(redis_url, s3_endpoint, tiny_models, redis_db):
    """A client of a Redis database pair of its own: no worker consumes its queue."""
    client = Client(make_settings(redis_url, s3_endpoint, tiny_models, db=redis_db))
    yield client
    client.close()


def ids(page) -> list[str]:
    return [record.id for record in page.records]


def everything(client: Client, **filters) -> list[str]:
    """Every id a listing gives, page after page."""
    seen: list[str] = []
    cursor = None
    while True:
        page = client.list(cursor=cursor, **filters)
        seen += ids(page)
        if page.cursor is None:
            return seen
        cursor = page.cursor


def stored(client: Client, job_id: str, state: str = "queued", at: datetime | None = None, **fields) -> JobRecord:
    """A record created directly in the store (as a producer would), listed like any other."""
    record = JobRecord(state=state, id=job_id, task=TEXT, model=MODEL, submitted_at=at or now(), **fields)
    assert client.store.create([record]) == [None]
    return record


def test_jobs_are_listed_newest_first(lister):
    submitted = [lister.submit(TEXT, f"review {i}", job_id=f"job-{i}") for i in range(5)]
    page = lister.list()
    assert ids(page) == submitted[::-1]
    assert page.cursor is None
    assert all(record.state == "queued" and record.model == MODEL for record in page.records)


def test_pages_follow_each_other_until_the_cursor_is_none(lister):
    submitted = lister.submit_many(TEXT, [f"review {i}" for i in range(25)])
    pages = []
    cursor = None
    while True:
        page = lister.list(limit=10, cursor=cursor)
        pages.append(ids(page))
        if page.cursor is None:
            break
        cursor = page.cursor
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [job_id for page in pages for job_id in page] == submitted[::-1]


def test_a_cursor_neither_repeats_nor_skips_while_new_jobs_arrive(lister):
    first = lister.submit_many(TEXT, [f"early {i}" for i in range(12)])
    page = lister.list(limit=5)
    seen = ids(page)
    while page.cursor is not None:
        lister.submit_many(TEXT, ["arrives meanwhile", "and another"])
        page = lister.list(limit=5, cursor=page.cursor)
        seen += ids(page)
    assert seen == first[::-1]
    assert len(lister.list(limit=1000).records) == 12 + 2 * 2  # a fresh listing shows the newcomers


def test_jobs_submitted_in_the_same_microsecond_are_each_listed_once(lister):
    at = now()
    for job_id in ("tie-b", "tie-d", "tie-a", "tie-c"):
        stored(lister, job_id, at=at)
    assert everything(lister, limit=1) == ["tie-d", "tie-c", "tie-b", "tie-a"]


def test_filters_by_state_model_and_time(lister):
    early = now()
    queued = lister.submit(TEXT, "stays queued", job_id="queued-1")
    canceled = lister.submit(TEXT, "is canceled", job_id="canceled-1")
    lister.cancel(canceled)
    other = lister.submit(TEXT, "another model", model=OTHER, job_id="other-1")
    stored(lister, "running-1", state="running")
    assert ids(lister.list(state="canceled")) == [canceled]
    assert ids(lister.list(state=["queued", "running"])) == ["running-1", other, queued]
    assert ids(lister.list(state=("succeeded", "failed"))) == []
    assert ids(lister.list(model=OTHER)) == [other]
    assert ids(lister.list(model=MODEL, state="queued")) == [queued]
    middle = lister.status(canceled).submitted_at
    assert ids(lister.list(since=middle)) == ["running-1", other, canceled]
    assert ids(lister.list(until=middle.isoformat())) == [canceled, queued]
    assert ids(lister.list(since=middle, until=middle)) == [canceled]
    assert ids(lister.list(since=early - timedelta(days=1), until=early - timedelta(hours=1))) == []


def test_queued_jobs_past_their_deadline_are_listed_as_expired(lister):
    stored(lister, "overdue", deadline=now() - timedelta(seconds=1))
    stored(lister, "in-time", deadline=now() + timedelta(hours=1))
    assert ids(lister.list(state="expired")) == ["overdue"]
    assert lister.store.get("overdue").state == "expired"  # settled in the store, as status would
    assert ids(lister.list(state="queued")) == ["in-time"]


def test_offloaded_results_are_not_read(lister):
    """Listing reads no object storage: a record keeps its result_ref (reading it would fail: no such object)."""
    stored(lister, "big-result", state="succeeded", result_ref="s3://results/missing.json")
    [record] = lister.list().records
    assert (record.result, record.result_ref) == (None, "s3://results/missing.json")


def test_filtering_reads_a_bounded_number_of_entries_per_call(lister, monkeypatch):
    monkeypatch.setattr(client_module, "LIST_SCAN", 20)
    monkeypatch.setattr(client_module, "LIST_BATCH", 7)
    wanted = lister.submit_many(TEXT, [f"old {i}" for i in range(3)])
    lister.cancel_many(wanted)
    lister.submit_many(TEXT, [f"new {i}" for i in range(45)])
    page = lister.list(state="canceled", limit=10)
    assert (page.records, page.cursor is not None) == ([], True)  # 20 entries read, none canceled: go on
    assert everything(lister, state="canceled", limit=10) == wanted[::-1]


def test_entries_of_expired_records_are_skipped_and_removed(lister):
    kept = lister.submit_many(TEXT, ["one", "two", "three"])
    gone = lister.submit(TEXT, "expires early", model=OTHER)
    lister.store.redis.delete(lister.store.key(kept[1]), lister.store.key(gone))  # as their TTL would
    assert ids(lister.list()) == [kept[2], kept[0]]
    for job_id, model in ((kept[1], MODEL), (gone, OTHER)):
        assert lister.store.redis.zscore(ALL_KEY, job_id) is None
        assert lister.store.redis.zscore(model_key(model), job_id) is None


def test_a_jobs_result_ttl_shortens_its_records_ttl(lister):
    short = lister.submit(TEXT, "kept briefly", result_ttl=30)
    default = lister.submit(TEXT, "kept as long as the settings say")
    assert 0 < lister.store.redis.ttl(lister.store.key(short)) <= 30
    assert 30 < lister.store.redis.ttl(lister.store.key(default)) <= lister.settings.result_ttl


def test_the_index_holds_no_job_older_than_result_ttl(lister):
    horizon = lister.settings.result_ttl
    stale = job_index.score(now() - timedelta(seconds=horizon + 1))
    lister.store.redis.zadd(ALL_KEY, {"stale-entry": stale})
    lister.store.redis.zadd(model_key(MODEL), {"stale-entry": stale})
    stored(lister, "ancient", at=now() - timedelta(seconds=horizon + 5))
    fresh = lister.submit(TEXT, "fresh")
    for key in (ALL_KEY, model_key(MODEL)):
        assert lister.store.redis.zrange(key, 0, -1) == [fresh.encode()]
        assert 0 < lister.store.redis.ttl(key) <= horizon
    assert ids(lister.list()) == [fresh]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"limit": 0}, "limit must be a whole number from 1 to 1000"),
        ({"limit": 1001}, "limit must be a whole number from 1 to 1000"),
        ({"limit": -5}, "limit must be"),
        ({"limit": True}, "limit must be"),
        ({"limit": "10"}, "limit must be"),
        ({"limit": 2.5}, "limit must be"),
        ({"state": "done"}, "unknown state(s) 'done'; states: queued, running, succeeded, failed, canceled, expired"),
        ({"state": ["queued", "x" * 500]}, "unknown state(s) 'xxxx"),
        ({"state": []}, "give one to six states"),
        ({"state": ["queued"] * 7}, "give one to six states"),
        ({"state": [["queued"]]}, "unknown state(s)"),
        ({"model": "gpt-unknown"}, "model 'gpt-unknown' is not in the catalogue; models: "),
        ({"model": 42}, "is not in the catalogue"),
        ({"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}, "is after until"),
        ({"since": "yesterday"}, "since 'yesterday' is not an ISO 8601 time"),
        ({"until": "2026-12-01T00:00:00"}, "has no time zone"),
        ({"since": datetime(2026, 12, 1)}, "has no time zone"),
        ({"since": 1764547200}, "since must be a datetime or an ISO 8601 string, not int"),
        ({"until": "2026-12-01T00:00:00Z" + " " * 100}, "is not an ISO 8601 time"),
        ({"cursor": "bm90IGEgY3Vyc29y.0123456789abcdef0123456789abcdef"}, "not one pipeq gave out"),
        ({"cursor": 7}, "not one pipeq gave out"),
    ],
)
def test_bad_arguments_are_refused(lister, arguments, message):
    lister.submit(TEXT, "something to list")
    with pytest.raises(InvalidJob) as refused:
        lister.list(**arguments)
    assert message in str(refused.value)


def test_a_tampered_cursor_is_refused(lister):
    lister.submit_many(TEXT, ["a", "b", "c"])
    cursor = lister.list(limit=1).cursor
    payload, signature = cursor.split(".")
    for forged in (payload[:-2] + "zz." + signature, payload + "." + signature[::-1], cursor + "x"):
        with pytest.raises(InvalidJob, match="start again without it"):
            lister.list(cursor=forged)
    assert len(lister.list(limit=10, cursor=cursor).records) == 2


def test_a_datetime_and_its_iso_text_bound_alike(lister):
    job_id = lister.submit(TEXT, "when")
    at = lister.status(job_id).submitted_at.astimezone(UTC)
    assert ids(lister.list(since=at)) == ids(lister.list(since=at.isoformat())) == [job_id]
    assert ids(lister.list(since=at + timedelta(microseconds=1))) == []
