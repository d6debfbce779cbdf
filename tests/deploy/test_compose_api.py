"""docker-compose's API service: a token from .env (hash only), loopback port, its own scoped MinIO user."""

import json
import re
from pathlib import Path

import yaml

from pipeq.api.tokens import token_sha256
from pipeq.config.api import Api

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DEV_TOKEN = "pq_dev-only-api-token-0123456789abcdefghij"


def default_of(value: str) -> str:
    """The default of a compose ``${NAME:-default}`` value."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", value)
    assert match, value
    return match[1]


def test_the_api_service_needs_a_token_and_uses_its_own_storage_user():
    api = COMPOSE["services"]["api"]
    assert api["command"][:4] == ["api", "serve", "--host", "0.0.0.0"]
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    environment = api["environment"]
    tokens = json.loads(default_of(environment["PIPEQ_API__TOKENS"]))
    settings = Api(tokens=tokens)
    assert [token.sha256 for token in settings.tokens] == [token_sha256(DEV_TOKEN)]
    assert DEV_TOKEN not in json.dumps(environment)  # only its hash is configured
    assert default_of(environment["AWS_ACCESS_KEY_ID"]) == "pipeq-api"
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    assert json.loads(example["PIPEQ_API_TOKENS"]) == tokens


def test_the_api_storage_user_may_sign_uploads_and_read_results_only():
    policy = json.loads((ROOT / "deploy" / "minio" / "pipeq-api.json").read_text())
    granted = {(tuple(s["Action"]), tuple(s["Resource"])) for s in policy["Statement"] if s["Effect"] == "Allow"}
    assert granted == {
        (("s3:PutObject",), ("arn:aws:s3:::media/uploads/*",)),
        (("s3:GetObject",), ("arn:aws:s3:::results/*",)),
    }
    init = "\n".join(COMPOSE["services"]["minio-init"]["command"])
    assert 'scoped_user "$$API_KEY" "$$API_SECRET" pipeq-api' in init
