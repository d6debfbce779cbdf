"""``pipeq api``: new tokens, the loopback rule for an API without tokens, the OpenAPI schema."""

import json
import tomllib

import pytest

from pipeq.api.cli import is_loopback, open_api_refusal
from pipeq.api.tokens import token_sha256
from pipeq.cli.main import main
from pipeq.config.api import Api, ApiToken
from pipeq.config.settings import Settings


def test_new_token_prints_a_secret_and_the_config_lines(capsys):
    assert main(["api", "new-token", "--name", "mobile", "--task", "ner", "--input-prefix", "s3://media/in/"]) == 0
    out = capsys.readouterr().out
    secret = out.split("stored nowhere): ", 1)[1].split()[0]
    config = tomllib.loads(out.split("add to the config file:", 1)[1])
    token = ApiToken.model_validate(config["api"]["tokens"][0])
    assert token.sha256 == token_sha256(secret) and secret not in out.split("add to the config file:", 1)[1]
    assert token.tasks == ["token-classification"] and token.input_prefixes == ["s3://media/in/"]


def test_new_token_refuses_a_bad_name(capsys):
    assert main(["api", "new-token", "--name", "Bad Name"]) == 2
    assert "a-z, 0-9" in capsys.readouterr().err


def test_without_tokens_the_api_listens_on_loopback_only(capsys):
    open_settings = Settings()
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert open_api_refusal(host, open_settings) is None, host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        assert "only with tokens" in open_api_refusal(host, open_settings), host
    with_token = Settings(api=Api(tokens=[ApiToken(name="t", sha256="0" * 64)]))
    assert open_api_refusal("0.0.0.0", with_token) is None
    assert main(["api", "serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "pipeq api new-token" in capsys.readouterr().err
    assert is_loopback("[::1]") and not is_loopback("not-an-address")


def test_token_settings_are_checked_against_the_catalogue():
    model = {"name": "m", "id": "x", "task": "text-classification"}
    with pytest.raises(ValueError, match="outside the catalogue"):
        Settings(models=[model], api={"tokens": [{"name": "t", "sha256": "0" * 64, "models": ["other"]}]})
    with pytest.raises(ValueError, match="outside allowed_object_prefixes"):
        Settings(
            allowed_object_prefixes=["s3://media/in/"],
            api={"tokens": [{"name": "t", "sha256": "0" * 64, "input_prefixes": ["s3://media/"]}]},
        )
    with pytest.raises(ValueError, match="uploads_prefix"):
        Settings(allowed_object_prefixes=["s3://media/in/"], api={"uploads_prefix": "s3://media/up/"})
    with pytest.raises(ValueError, match="same name"):
        Api(tokens=[ApiToken(name="t", sha256="0" * 64), ApiToken(name="t", sha256="1" * 64)])
    with pytest.raises(ValueError, match="type/subtype"):
        Api(upload_content_types=["text/html; charset=utf-8"])


def test_openapi_prints_the_schema(capsys):
    assert main(["api", "openapi"]) == 0
    assert "/v1/jobs" in json.loads(capsys.readouterr().out)["paths"]
