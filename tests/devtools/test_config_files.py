"""The TOML writer: settings written to a file read back the same."""

import base64

from devtools.config_files import write_config
from pipeq.config.catalogue import ModelEntry
from pipeq.config.settings import IngestRule, Limits, Settings, Webhooks, load_settings

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a config-file test secret, 32 B").decode()


def every_kind_of_setting() -> Settings:
    """Scalars, a secret, nested tables, lists of tables with nested dicts and lists, and None values."""
    return Settings(
        broker_url="redis://broker:6379/4",
        result_backend="redis://results:6379/5",
        s3_endpoint_url="http://minio:9000",
        s3_access_key_id="pipeq",
        s3_secret_access_key='a "quoted" secret\\with = signs',
        limits=Limits(max_media_bytes=1234, max_text_chars=99),
        allowed_object_prefixes=["s3://media/", "s3://uploads/in/"],
        visibility_timeout=900,
        results_bucket="results",
        models=[
            ModelEntry(
                name="sentiment",
                id="org/sentiment",
                task="sentiment-analysis",
                queue="cpu",
                default=True,
                max_batch_jobs=7,
                max_wait_s=0.25,
                pipeline_batch_size=3,
            ),
            ModelEntry(
                name="whisper",
                id="/models/whisper large",
                task="automatic-speech-recognition",
                dtype="float16",
                devices=[0, 1],
                max_memory={"0": "20GiB", "cpu": "30GiB"},
                allowed_object_prefixes=["s3://media/calls/"],
            ),
        ],
        webhooks=Webhooks(secret=WEBHOOK_SECRET, max_attempts=3, backoff=0.5, allow_private=True),
        ingest=[
            IngestRule(
                bucket="media",
                prefix="calls/",
                suffix=".flac",
                task="automatic-speech-recognition",
                parameters={"return_timestamps": "word", "generate_kwargs": {"language": "en"}},
                webhook="https://example.com/hooks/transcripts",
            ),
            IngestRule(bucket="media", prefix="notes/", task="text-classification"),
        ],
    )


def test_settings_read_back_the_same_from_the_file(tmp_path):
    settings = every_kind_of_setting()
    path = write_config(settings, tmp_path / "pipeq.toml")
    loaded = load_settings(path)
    assert loaded.config == path
    assert loaded.model_dump(exclude={"config"}) == settings.model_dump(exclude={"config"})
    assert loaded.s3_secret_access_key.get_secret_value() == 'a "quoted" secret\\with = signs'
    assert loaded.webhooks.secret.get_secret_value() == WEBHOOK_SECRET
    assert loaded.models[0].task == "text-classification"
    assert loaded.models[1].max_memory == {"0": "20GiB", "cpu": "30GiB"}
    assert loaded.ingest[0].parameters == {"return_timestamps": "word", "generate_kwargs": {"language": "en"}}


def test_the_file_holds_secrets_in_clear_and_no_none_values(tmp_path):
    text = write_config(every_kind_of_setting(), tmp_path / "pipeq.toml").read_text()
    assert 'broker_url = "redis://broker:6379/4"' in text.splitlines()
    assert f'secret = "{WEBHOOK_SECRET}"' in text.splitlines()
    assert "**" not in text  # no masked secret
    assert "revision" not in text and "s3_region" not in text  # None in the settings: absent from the file
    assert text.count("[[models]]") == 2 and text.count("[[ingest]]") == 2


def test_settings_with_defaults_only_read_back_the_same(tmp_path):
    loaded = load_settings(write_config(Settings(), tmp_path / "pipeq.toml"))
    assert loaded.model_dump(exclude={"config"}) == Settings().model_dump(exclude={"config"})
