"""The OpenAPI schema: served at /openapi.json, committed as docs/openapi.json, and the same."""

import json
from pathlib import Path

from pipeq.api.cli import openapi_json

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
REGENERATE = "regenerate it: .venv/bin/pipeq api openapi > docs/openapi.json"


def test_the_committed_schema_is_the_apis(http):
    served = http.get("/openapi.json")
    assert served.status_code == 200
    assert json.loads(COMMITTED.read_text()) == served.json(), REGENERATE
    assert COMMITTED.read_text() == openapi_json(), REGENERATE


def test_the_schema_documents_every_endpoint_and_its_problems():
    schema = json.loads(COMMITTED.read_text())
    paths = schema["paths"]
    expected = {
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}/cancel", "post"),
        ("/v1/jobs/{job_id}/events", "get"),
        ("/v1/models", "get"),
        ("/v1/uploads", "post"),
    }
    assert {(path, method) for path, operations in paths.items() for method in operations} == expected
    submit = paths["/v1/jobs"]["post"]
    assert {"201", "200", "401", "403", "409", "413", "422", "429", "503"} <= set(submit["responses"])
    assert "JobRequest" in schema["components"]["schemas"] and "UploadRequest" in schema["components"]["schemas"]
