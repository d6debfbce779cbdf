"""Settings from a TOML file and the environment; the catalogue's lookups."""

import pytest

from pipeq.config import Catalogue, ModelEntry, UnknownModel, load_settings
from pipeq.config.catalogue import DeprecatedSetting
from pipeq.config.settings import Settings

EXAMPLE = "config/pipeq.example.toml"


def test_the_example_config_loads():
    settings = load_settings(EXAMPLE)
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.catalogue.queues() == ["cpu", "gpu"]
    assert settings.catalogue.resolve("text-classification", None).name == "sentiment"


def test_environment_variables_override_the_file(monkeypatch):
    monkeypatch.setenv("PIPEQ_CONFIG", EXAMPLE)
    monkeypatch.setenv("PIPEQ_BROKER_URL", "redis://broker:6379/0")
    monkeypatch.setenv("PIPEQ_RESULT_BACKEND", "redis://results:6379/1")
    monkeypatch.setenv("PIPEQ_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("PIPEQ_LIMITS__MAX_TEXT_CHARS", "1234")
    settings = Settings()
    assert (settings.broker_url, settings.result_backend) == ("redis://broker:6379/0", "redis://results:6379/1")
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.limits.max_text_chars == 1234
    assert settings.limits.max_inline_bytes == 262144  # from the file
    assert len(settings.models) == 3


def test_a_missing_config_file_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("PIPEQ_CONFIG", "/nowhere/pipeq.toml")
    with pytest.raises(FileNotFoundError, match=r"PIPEQ_CONFIG names /nowhere/pipeq\.toml"):
        Settings()


def test_unknown_keys_and_tasks_are_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('brokr_url = "redis://x"\n')
    with pytest.raises(ValueError, match="brokr_url"):
        load_settings(bad)
    with pytest.raises(ValueError, match="unknown task 'summarise-my-day'"):
        ModelEntry(name="m", task="summarise-my-day")


def test_catalogue_defaults_names_and_refusals():
    catalogue = Catalogue(
        [
            ModelEntry(id="org/first", task="text-classification"),
            ModelEntry(name="second", id="org/second", task="text-classification", default=True),
            ModelEntry(name="asr", id="org/asr", task="automatic-speech-recognition"),
        ]
    )
    assert catalogue.resolve("text-classification", None).name == "second"
    assert catalogue.resolve("text-classification", "org/first").id == "org/first"
    assert catalogue.resolve("automatic-speech-recognition", None).name == "asr"
    with pytest.raises(UnknownModel, match="no model in the catalogue serves image-classification"):
        catalogue.resolve("image-classification", None)
    with pytest.raises(UnknownModel, match="models for text-classification: org/first, second"):
        catalogue.resolve("text-classification", "org/evil")
    assert ModelEntry(id="x", task="text-classification").trust_remote_code is False


@pytest.mark.parametrize(
    ("task", "configured", "device", "expected"),
    [
        ("automatic-speech-recognition", None, "cpu", 1),  # batching speech on CPU costs more than it saves
        ("audio-classification", None, "cpu", 1),
        ("automatic-speech-recognition", None, "cuda", 16),
        ("text-classification", None, "cpu", 16),
        ("image-classification", None, "cpu", 16),
        ("automatic-speech-recognition", 8, "cpu", 8),  # a configured batch_size is kept
        ("text-classification", 4, "cuda", 4),
    ],
)
def test_the_pipeline_batch_size_defaults_by_modality_and_device(task, configured, device, expected):
    entry = ModelEntry(name="m", task=task, pipeline_batch_size=configured)
    assert entry.batch_size_on(device) == expected


def test_old_catalogue_keys_still_work_and_name_their_new_key(tmp_path):
    config = tmp_path / "old.toml"
    config.write_text(
        '[[models]]\nname = "m"\ntask = "text-classification"\nmax_batch = 7\nflush_interval = 0.5\nbatch_size = 3\n'
    )
    with pytest.warns(DeprecatedSetting) as warned:
        [entry] = load_settings(config).models
    assert (entry.max_batch_jobs, entry.max_wait_s, entry.pipeline_batch_size) == (7, 0.5, 3)
    assert [str(w.message) for w in warned] == [
        "model 'm': 'max_batch' is deprecated, use 'max_batch_jobs'",
        "model 'm': 'flush_interval' is deprecated, use 'max_wait_s'",
        "model 'm': 'batch_size' is deprecated, use 'pipeline_batch_size'",
    ]


def test_an_old_key_beside_its_new_name_is_refused():
    with pytest.raises(ValueError, match="sets both 'max_batch' and 'max_batch_jobs'"):
        ModelEntry(name="m", task="text-classification", max_batch=2, max_batch_jobs=3)


def test_model_queues_and_webhooks_redeliver_after_dead_after():
    from pipeq.config import Webhooks
    from pipeq.core.messaging import WEBHOOK_UNACKED_KEYS, redelivery_options

    settings = Settings(
        models=[ModelEntry(name="slow", task="text-classification", expected_seconds=900)],
        webhooks=Webhooks(max_backoff=3600, timeout=30),
    )
    models = redelivery_options(settings)
    assert models["visibility_timeout"] == settings.dead_after_s == 30  # a slow model: kept alive, not waited for
    assert models["unacked_restore_interval"] == 5 and "unacked_key" not in models
    webhooks = redelivery_options(settings, webhooks=True)
    # an hour's retry wait is kept alive by the webhook worker (pipeq.webhooks.keepalive): no long timeout needed
    assert webhooks["visibility_timeout"] == settings.broker_visibility_timeout() == 30
    assert {key: webhooks[key] for key in WEBHOOK_UNACKED_KEYS} == WEBHOOK_UNACKED_KEYS
    assert Settings(visibility_timeout=5).broker_visibility_timeout() == 5
    with pytest.raises(ValueError):
        Settings(dead_after_s=0.5)


def test_ingest_rules_match_bucket_prefix_and_suffix():
    from pipeq.config import IngestRule

    rule = IngestRule(bucket="media", prefix="calls/", suffix=".flac", task="automatic-speech-recognition")
    assert rule.matches("media", "calls/2026/a.flac")
    assert not rule.matches("media", "calls/a.wav")
    assert not rule.matches("other", "calls/a.flac")
    with pytest.raises(ValueError, match="unknown task"):
        IngestRule(bucket="b", task="nonsense")
