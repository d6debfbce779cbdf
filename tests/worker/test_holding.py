"""How long a worker may hold a message, and the consumer_timeout RabbitMQ must allow for it."""

import re
from pathlib import Path

from pipeq.config.settings import Settings
from pipeq.worker.holding import RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_S, consumer_timeout_ms, longest_hold_s

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "pipeq.example.toml"


def test_the_deployed_consumer_timeout_outlasts_what_the_example_catalogue_holds():
    conf = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    [value] = re.findall(r"^consumer_timeout = (\d+)$", conf, re.MULTILINE)
    assert int(value) >= consumer_timeout_ms(Settings(config=EXAMPLE))


def test_slower_or_larger_models_need_a_longer_consumer_timeout():
    settings = Settings(config=EXAMPLE)
    slower = [entry.model_copy(update={"run_time_limit_s": 3600.0}) for entry in settings.models]
    larger = [entry.model_copy(update={"max_batch_jobs": 1024}) for entry in settings.models]
    base = longest_hold_s(settings)
    assert longest_hold_s(settings.model_copy(update={"models": slower})) > base
    assert longest_hold_s(settings.model_copy(update={"models": larger})) > base


def test_the_consumer_timeout_is_whole_hours_and_never_below_rabbitmqs_default():
    tiny = Settings(config=EXAMPLE)
    quick_batch = {"max_batch_jobs": 1, "expected_seconds": 1.0, "run_time_limit_s": None}
    quick = [entry.model_copy(update=quick_batch) for entry in tiny.models]
    settings = tiny.model_copy(update={"models": quick})
    assert longest_hold_s(settings) < RABBITMQ_DEFAULT_CONSUMER_TIMEOUT_S
    assert consumer_timeout_ms(settings) == 3600 * 1000
    assert consumer_timeout_ms(tiny) % (3600 * 1000) == 0
