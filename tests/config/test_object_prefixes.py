"""allowed_object_prefixes: how prefixes are written and matched, catalogue entries that only narrow them, and
ingest rules that must watch inside them."""

import pytest
from pydantic import ValidationError

from pipeq.config.catalogue import ModelEntry
from pipeq.config.object_prefixes import ObjectAccess, normalise_prefix
from pipeq.config.settings import IngestRule, Settings

TEXT = "text-classification"


def entry(name: str = "sentiment", prefixes: list[str] | None = None) -> ModelEntry:
    return ModelEntry(name=name, task=TEXT, allowed_object_prefixes=prefixes)


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("s3://media", "s3://media/"),
        ("s3://media/", "s3://media/"),
        ("s3://media/calls/2024/", "s3://media/calls/2024/"),
    ],
)
def test_a_prefix_is_a_whole_bucket_or_a_folder(written, read):
    assert normalise_prefix(written) == read
    assert Settings(allowed_object_prefixes=[written]).allowed_object_prefixes == [read]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("s3://media/in", "must end with '/'"),
        ("media/", "write s3://bucket/ or s3://bucket/folder/"),
        ("https://media.example.com/", "write s3://bucket/ or s3://bucket/folder/"),
        ("s3://Media/", "does not name a bucket"),
        ("s3:///calls/", "does not name a bucket"),
        ("s3://media//", "empty segment"),
        ("s3://media/calls/../", "'..' segment"),
        ("s3://media/./calls/", "'.' or '..' segment"),
    ],
)
def test_malformed_prefixes_are_refused_at_load_saying_how_to_write_them(prefix, message):
    with pytest.raises(ValidationError, match="allowed_object_prefixes") as refused:
        Settings(allowed_object_prefixes=[prefix])
    assert message in str(refused.value)
    with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
        entry(prefixes=[prefix])


def test_a_folder_prefix_allows_only_what_is_inside_the_folder():
    access = ObjectAccess(("s3://media/in/",))
    assert access.allows("media", "in/call.wav")
    assert access.allows("media", "in/2024/call.wav")
    assert not access.allows("media", "internal-secrets.txt")
    assert not access.allows("media", "in")
    assert not access.allows("media-backup", "in/call.wav")
    assert not access.allows("other", "media/in/call.wav")


@pytest.mark.parametrize(
    "key", ["in/../secrets.txt", "in/./call.wav", "in//call.wav", "in/", "in/..", "in\\..\\x", "in/call\n.wav"]
)
def test_keys_that_could_be_read_as_other_keys_are_never_allowed(key):
    access = ObjectAccess(("s3://media/",))
    assert not access.allows("media", key)
    assert "Refer to objects by their plain key" in access.refusal("media", key)


def test_with_no_prefixes_no_object_is_allowed_and_the_refusal_names_the_setting():
    refusal = Settings().object_access().refusal("media", "call.wav")
    assert refusal.startswith("object s3://media/call.wav is refused: allowed_object_prefixes is empty")


def test_a_catalogue_entry_narrows_the_settings_prefixes():
    narrow = entry("narrow", ["s3://media/calls/"])
    settings = Settings(allowed_object_prefixes=["s3://media/"], models=[narrow, entry("wide")])
    assert settings.object_access(narrow).allows("media", "calls/a.wav")
    refusal = settings.object_access(narrow).refusal("media", "photos/a.png")
    assert "outside allowed_object_prefixes of model 'narrow' (s3://media/calls/)" in refusal
    assert settings.object_access(settings.catalogue.models["wide"]).allows("media", "photos/a.png")
    assert (
        Settings(allowed_object_prefixes=["s3://media/"], models=[entry("none", [])])
        .object_access(entry("none", []))
        .refusal("media", "a.wav")
    )


@pytest.mark.parametrize("prefix", ["s3://other/", "s3://media/", "s3://media/call/"])
def test_a_catalogue_entry_cannot_widen_them(prefix):
    with pytest.raises(ValidationError) as refused:
        Settings(allowed_object_prefixes=["s3://media/calls/"], models=[entry("wide", [prefix])])
    assert f"model 'wide' allows {prefix}, which is outside allowed_object_prefixes (s3://media/calls/)" in str(
        refused.value
    )


def test_ingest_rules_must_watch_inside_the_prefixes_their_model_may_read():
    models = [entry("sentiment"), entry("calls-only", ["s3://media/calls/"])]
    inside = IngestRule(bucket="media", prefix="calls/2024-", task=TEXT, model="calls-only")
    Settings(allowed_object_prefixes=["s3://media/"], models=models, ingest=[inside])
    for rule, setting in [
        (IngestRule(bucket="uploads", prefix="calls/", task=TEXT), "allowed_object_prefixes (s3://media/)"),
        (IngestRule(bucket="media", prefix="", task=TEXT, model="calls-only"), "of model 'calls-only'"),
        (IngestRule(bucket="media", prefix="calls", task=TEXT, model="calls-only"), "of model 'calls-only'"),
    ]:
        with pytest.raises(ValidationError, match="the ingest rule watching") as refused:
            Settings(allowed_object_prefixes=["s3://media/"], models=models, ingest=[rule])
        assert setting in str(refused.value)
    with pytest.raises(ValidationError, match=r"add s3://uploads/calls/ to allowed_object_prefixes"):
        Settings(models=models[:1], ingest=[IngestRule(bucket="uploads", prefix="calls/x", task=TEXT)])


def test_the_prefixes_come_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("PIPEQ_ALLOWED_OBJECT_PREFIXES", '["s3://media/calls/", "s3://uploads"]')
    assert Settings().allowed_object_prefixes == ["s3://media/calls/", "s3://uploads/"]


def test_the_example_config_allows_what_its_ingest_rule_watches():
    settings = Settings(config="config/pipeq.example.toml")
    assert settings.allowed_object_prefixes == ["s3://media/"]
    assert settings.ingest
