"""The TOML config and HEADWAY_* settings load into typed, immutable objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.config import HeadwayConfig, development_config, load_config
from broker.errors import ConfigError
from broker.settings import Settings

EXAMPLE = Path(__file__).parents[2] / "examples" / "headway.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "headway.toml"
    path.write_text(text)
    return path


def test_the_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(EXAMPLE)
    assert config.routes["summarize"].deployments[0].model
    assert config.tenants["acme"].budget_usd == 50.0
    assert config.tenant("someone-else") is config.tenants["default"]


def test_without_a_file_the_development_config_applies(tmp_path: Path) -> None:
    config = load_config(tmp_path / "missing.toml", simulator_url="http://sim/v1")
    assert set(config.routes) == {"summarize", "embed"}
    assert "demo" in config.tenants
    assert config.providers["simulator"].base_url == "http://sim/v1"


def test_an_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[providers.p]\ntype = "openai"\nbase_url = "u"\napi_key = "sk-secret"\n'
    )
    with pytest.raises(ConfigError, match=r"providers\.p\.api_key: unknown key"):
        load_config(path)


def test_a_wrong_type_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.p]\ntype = "openai"\nbase_url = "u"\n[routes.r]\nkind = "chat"\n'
        '[[routes.r.deployments]]\nprovider = "p"\nmodel = "m"\ninput_usd_per_mtok = "cheap"\n',
    )
    with pytest.raises(ConfigError, match=r"routes\.r\.deployments\.0\.input_usd_per_mtok"):
        load_config(path)


def test_a_deployment_must_name_a_known_provider(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[routes.r]\nkind = "chat"\n[[routes.r.deployments]]\nprovider = "nope"\nmodel = "m"\n',
    )
    with pytest.raises(ConfigError, match="no provider named 'nope'"):
        load_config(path)


def test_invalid_toml_says_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[routes\n"))


def test_without_a_default_tenant_unknown_tenants_have_no_config() -> None:
    config = HeadwayConfig.model_validate({"tenants": {"acme": {}}})
    assert config.tenant("acme") is not None
    assert config.tenant("stranger") is None


def test_config_objects_are_immutable() -> None:
    config = development_config()
    with pytest.raises(ValidationError):
        config.routes["summarize"].kind = "embedding"  # type: ignore[misc]


def test_settings_come_from_headway_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWAY_CONCURRENCY", "12")
    monkeypatch.setenv("HEADWAY_TOPIC_PREFIX", "hw")
    monkeypatch.setenv("HEADWAY_KAFKA_BOOTSTRAP", "k:9092")
    settings = Settings()
    assert settings.concurrency == 12
    assert settings.topics.results == "hw.results"
    assert settings.kafka_bootstrap == "k:9092"
    assert settings.database_url.startswith("sqlite+aiosqlite")


def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWAY_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="concurrency"):
        Settings()


def test_secrets_come_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(EXAMPLE)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert config.providers["openai"].api_key() is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert config.providers["openai"].api_key() == "sk-test"


def test_a_batch_deployment_is_priced_at_half_unless_it_says_otherwise() -> None:
    from broker.config import DeploymentConfig

    half = DeploymentConfig(
        provider="p", model="m", input_usd_per_mtok=1.0, output_usd_per_mtok=4.0, batch=True
    )
    assert half.batch_cost_usd(1_000_000, 1_000_000) == half.cost_usd(1_000_000, 1_000_000) / 2
    own = half.model_copy(
        update={"batch_input_usd_per_mtok": 0.1, "batch_output_usd_per_mtok": 0.2}
    )
    assert abs(own.batch_cost_usd(1_000_000, 1_000_000) - 0.3) < 1e-12


def test_batch_on_a_provider_without_a_batch_api_is_refused() -> None:
    from broker.config import parse_config

    data = {
        "providers": {"g": {"type": "gemini", "base_url": "http://x"}},
        "routes": {
            "r": {"kind": "chat", "deployments": [{"provider": "g", "model": "m", "batch": True}]}
        },
    }
    with pytest.raises(ConfigError, match="gemini has no batch API"):
        parse_config(data)
