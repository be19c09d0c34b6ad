from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from core.settings import Settings

pytestmark = pytest.mark.unit


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092,127.0.0.1:19093")
    monkeypatch.setenv("RECSYS_REDIS_URL", "redis://127.0.0.1:6390/2")
    monkeypatch.setenv("RECSYS_STATE_DIR", "/tmp/somewhere")
    settings = Settings()
    assert settings.kafka_port == 19092
    assert settings.redis_port == 6390
    assert settings.qdrant_shard_dir == Path("/tmp/somewhere/qdrant")


def test_secrets_are_masked_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_API_KEY", "s3cret-key")
    monkeypatch.setenv("RECSYS_REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
    settings = Settings()
    shown = settings.masked()
    assert "s3cret-key" not in repr(settings)
    assert "s3cret-key" not in str(shown)
    assert "hunter2" not in str(shown)
    assert shown["redis_url"] == "redis://:**********@127.0.0.1:6379/0"
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "s3cret-key"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("RECSYS_KAFKA_BOOTSTRAP_SERVERS", "localhost"),
        ("RECSYS_REDIS_URL", "http://127.0.0.1:6379"),
        ("RECSYS_KAFKA_PARTITIONS", "0"),
    ],
)
def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert var.removeprefix("RECSYS_").lower() in str(info.value)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.redis_url = "redis://elsewhere:1/0"  # type: ignore[misc]
