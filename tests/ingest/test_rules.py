"""Rules to jobs: the first matching rule decides, and a job id names one object version for good."""

from pipeq.config.settings import IngestRule
from pipeq.core.contract import ObjectInput
from pipeq.ingest.rules import jobs_for_event, match
from tests.support.s3_events import INGEST_ID_KEY, REMOVED, record

REPORTS = IngestRule(bucket="media", prefix="reports/", suffix=".txt", task="text-classification", model="tiny")
EVERYTHING = IngestRule(bucket="media", task="text-classification", parameters={"top_k": 2})
RULES = [REPORTS, EVERYTHING]
KEY = INGEST_ID_KEY.encode()


def test_a_job_id_is_pinned_to_bucket_key_tag_and_the_id_key():
    job = match(RULES, "media", "reports/Q3 résumé ✓ 100%+.txt", "0123abcd")
    assert job is not None
    # HMAC-SHA256(key, bucket NUL key NUL tag), computed with openssl: the same after any release, never change.
    assert job.job_id(KEY) == "s3-0ddecd0e429e3269f9de4ca069e2a709c7aae5a5"
    assert match(RULES, "media", "reports/Q3 résumé ✓ 100%+.txt", "0123abcE").job_id(KEY) == (
        "s3-2d3623c2f4b1605e54f6d0001bb0bebdb335faad"
    )
    assert job.uri == "s3://media/reports/Q3 résumé ✓ 100%+.txt"
    assert job.seen == "media/reports/Q3 résumé ✓ 100%+.txt@0123abcd"
    assert job.input() == ObjectInput(uri="s3://media/reports/Q3 résumé ✓ 100%+.txt")


def test_a_version_id_travels_with_the_job():
    job = match(RULES, "media", "reports/a.txt", "v-7", version_id="v-7")
    assert job.job_id(KEY) == "s3-e1195bc95a842d6179c64ecd37c941fb07d38122"
    assert job.input() == ObjectInput(uri="s3://media/reports/a.txt", version_id="v-7")


def test_the_first_matching_rule_decides():
    assert match(RULES, "media", "reports/a.txt", "e").rule is REPORTS
    assert match(RULES, "media", "reports/a.pdf", "e").rule is EVERYTHING  # not REPORTS' suffix
    assert match(RULES, "media", "other/a.txt", "e").rule is EVERYTHING
    assert match([REPORTS], "media", "reports/a.pdf", "e") is None
    assert match([REPORTS], "media", "other/a.txt", "e") is None
    assert match(RULES, "elsewhere", "reports/a.txt", "e") is None
    assert match(RULES, "media", "reports/", "e") is None  # a folder marker
    assert match([], "media", "reports/a.txt", "e") is None


def test_jobs_for_event_keeps_created_objects_that_match_in_order():
    event = {
        "Records": [
            record("media", "reports/a.txt", "e1", event_name=REMOVED),
            record("media", "reports/b.pdf", "e2"),
            record("elsewhere", "reports/c.txt", "e3"),
            record("media", "notes/", "e4"),
            record("media", "reports/d 1.txt", "e5", version_id="v5"),
        ]
    }
    jobs = jobs_for_event(event, [REPORTS])
    assert [(job.key, job.tag, job.version_id, job.rule) for job in jobs] == [("reports/d 1.txt", "e5", "v5", REPORTS)]
    assert [job.key for job in jobs_for_event(event, RULES)] == ["reports/b.pdf", "reports/d 1.txt"]
