"""Fetching inputs: media references inside dict inputs are fetched, and spooled ones released."""

import pytest

from devtools.media import picture
from pipeq.core.contract import make_input
from pipeq.worker.errors import MediaNotFound
from pipeq.worker.media import MediaFetcher, release


@pytest.fixture
def fetcher(s3):
    fetcher = MediaFetcher(s3, max_bytes=1_000_000, spool_bytes=1_000)
    yield fetcher
    fetcher.close()


def test_references_inside_a_dict_are_fetched_in_place(fetcher, upload):
    small, large = picture(8, 8), picture(200, 200)
    assert len(small) < 1_000 < len(large)
    item = make_input({"images": [upload(small, ".png"), upload(large, ".png"), b"inline"], "text": "hi"})
    fetched = fetcher.fetch(item)
    first, spooled, inline = fetched["images"]
    assert (first, inline, fetched["text"]) == (small, b"inline", "hi")
    assert spooled.read() == large  # over spool_bytes: a temporary file
    release(fetched)
    assert spooled.closed


def test_a_missing_object_inside_a_dict_fails_its_job(fetcher, upload):
    item = make_input({"images": [upload(picture(200, 200)), "s3://media/missing.png"]})
    [failure] = fetcher.fetch_many([item])
    assert isinstance(failure, MediaNotFound)
    assert "s3://media/missing.png" in str(failure)
