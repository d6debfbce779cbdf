"""GET /v1/models: names, tasks, input kinds and the parameters' JSON Schema with the model's caps."""

import jsonschema

from tests.api.conftest import PARKED, bearer
from tests.support.settings import model_name


def models(http, token="alpha"):
    response = http.get("/v1/models", headers=bearer(token))
    assert response.status_code == 200
    return {model["name"]: model for model in response.json()["models"]}


def test_every_model_is_described_for_a_producer(http, api_settings):
    described = models(http)
    assert set(described) == set(api_settings.catalogue.models)
    speech = described[model_name("automatic-speech-recognition")]
    assert speech["task"] == "automatic-speech-recognition" and speech["input"]["kinds"] == ["s3"]
    assert "audio/*" in speech["input"]["upload_types"] and speech["input"]["max_audio_seconds"] > 0
    text = described[model_name("text-classification")]
    assert text["input"]["kinds"] == ["text", "s3", "dict"] and text["input"]["dict_keys"] == ["text", "text_pair"]
    assert text["default"] is True and described[PARKED]["default"] is False


def test_the_parameter_schema_carries_the_caps_and_matches_the_checks(http, api_client):
    generation = models(http)[model_name("text-generation")]
    schema = generation["parameters"]
    jsonschema.Draft202012Validator.check_schema(schema)
    caps = api_client.settings.catalogue.models[model_name("text-generation")].caps
    assert schema["properties"]["max_new_tokens"]["maximum"] == caps.max_new_tokens
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"max_new_tokens": caps.max_new_tokens})
    assert not validator.is_valid({"max_new_tokens": caps.max_new_tokens + 1})
    assert not validator.is_valid({"trust_remote_code": True})
