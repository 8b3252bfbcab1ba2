"""Settings: environment < TOML file < flags, and loud, precise failures."""

from __future__ import annotations

import traceback
from decimal import Decimal
from pathlib import Path

import pytest

from tallygate.config import ConfigError, Settings, load_settings, settings_reference
from tests.api.support import forget_tallygate_environment

ROUTES = """
[[routes]]
model = "cltech/deepseek-r1-32b"
base_url = "http://127.0.0.1:9000/v1"
api_key_env = "DEEPSEEK_KEY"
upstream_model = "deepseek-r1-32b"
category = "chat"
[routes.price]
input_per_million = "0.50"
cached_input_per_million = "0.10"
output_per_million = "2.00"

[[routes]]
model = "rerank"
base_url = "https://rerank.internal/v1"
kind = "service"
[routes.price]
per_call = "0.0003"
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: no TALLYGATE_* from the machine running the tests."""
    forget_tallygate_environment(monkeypatch)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tallygate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///./tallygate.db"
    assert (settings.port, settings.workers, settings.durability) == (8000, 1, "batched")
    assert settings.admin_token is None and settings.routes == []
    assert settings.minute_retention_days == 7 and settings.raw_retention_days == 0


def test_environment_then_file_then_flags(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYGATE_PORT", "8101")
    monkeypatch.setenv("TALLYGATE_CURRENCY", "EUR")
    monkeypatch.setenv("TALLYGATE_RAW_RETENTION_DAYS", "90")
    monkeypatch.setenv("TALLYGATE_ADMIN_TOKEN", "from-env-admin-token")
    monkeypatch.setenv("TALLYGATE_DATABASE_URL", "postgresql://env@127.0.0.1:5432/env")
    config = _toml(tmp_path, 'port = 8202\ncurrency = "CNY"\nhost = "0.0.0.0"\n'
                             'database_url = "sqlite:///from-file.db"\n')

    from_env = load_settings()
    assert (from_env.port, from_env.currency, from_env.raw_retention_days) == (8101, "EUR", 90)
    assert from_env.admin_token is not None
    assert from_env.admin_token.get_secret_value() == "from-env-admin-token"

    from_file = load_settings(config)
    assert (from_file.port, from_file.currency, from_file.host) == (8202, "CNY", "0.0.0.0")
    assert from_file.raw_retention_days == 90  # not in the file: the environment's
    assert from_file.database_url == "sqlite:///from-file.db"

    from_flags = load_settings(config, port=8303, database_url="sqlite:///flag.db",
                               host=None, workers=None)
    assert from_flags.port == 8303 and from_flags.database_url == "sqlite:///flag.db"
    assert from_flags.host == "0.0.0.0"  # a flag that is None was not given
    assert from_flags.currency == "CNY" and from_flags.raw_retention_days == 90


def test_routes_from_the_file(tmp_path: Path) -> None:
    settings = load_settings(_toml(tmp_path, ROUTES))
    deepseek, rerank = settings.routes
    assert deepseek.model == "cltech/deepseek-r1-32b" and deepseek.kind == "model"
    assert deepseek.api_key_env == "DEEPSEEK_KEY" and deepseek.category == "chat"
    assert deepseek.price is not None
    assert deepseek.price.input_per_million == Decimal("0.50")
    assert deepseek.price.cached_input_per_million == Decimal("0.10")
    assert rerank.kind == "service" and rerank.price is not None
    assert rerank.price.per_call == Decimal("0.0003")
    assert settings.route_for("rerank") is rerank and settings.route_for("nope") is None


@pytest.mark.parametrize("url", ["sqlite:///x.db", "sqlite:////abs/x.db",
                                 "postgresql://u@127.0.0.1:5432/db",
                                 "postgresql+psycopg://u@127.0.0.1:5432/db"])
def test_database_urls_accepted(url: str) -> None:
    assert load_settings(database_url=url).database_url == url


@pytest.mark.parametrize(("toml", "named"), [
    ("port = 8000\nport = 8001\n", "not valid TOML"),
    ("port = \n", "not valid TOML"),
    ('port = "eighty"\n', "port"),
    ("port = 70000\n", "port"),
    ("workers = 0\n", "workers"),
    ('durability = "sometimes"\n', "durability"),
    ('log_level = "verbose"\n', "log_level"),
    ('currency = "EURO"\n', "currency"),
    ("minute_retention_days = 0\n", "minute_retention_days"),
    ("raw_retention_days = -1\n", "raw_retention_days"),
    ("flush_interval_ms = 0\n", "flush_interval_ms"),
    ("ingest_max_events = 1000000\n", "ingest_max_events"),
    ('prot = 8000\n', "prot"),
    ('database_url = "mysql://x@y/z"\n', "database_url"),
    (ROUTES + '\n[[routes]]\nmodel = "rerank"\nbase_url = "http://other/v1"\n',
     "'rerank' is declared twice"),
    ('[[routes]]\nmodel = "m"\nbase_url = "ftp://x"\n', "routes.0.base_url"),
    ('[[routes]]\nmodel = "m"\nbase_url = "http://x"\nkind = "proxy"\n', "routes.0.kind"),
    ('[[routes]]\nmodel = "m"\nbase_url = "http://x"\ncategory = "video"\n',
     "routes.0.category"),
    ('[[routes]]\nmodel = "m"\nbase_url = "http://x"\ntimeout = 3\n', "routes.0.timeout"),
    ('[[routes]]\nbase_url = "http://x"\n', "routes.0.model"),
    ('[[routes]]\nmodel = "m"\nbase_url = "http://x"\n[routes.price]\n'
     'input_per_million = "-1"\n', "routes.0.price.input_per_million"),
    ('[[routes]]\nmodel = "m"\nbase_url = "http://x"\n[routes.price]\n'
     'output_per_million = "NaN"\n', "routes.0.price.output_per_million"),
])
def test_a_bad_file_is_a_config_error_naming_the_problem(tmp_path: Path, toml: str,
                                                         named: str) -> None:
    path = _toml(tmp_path, toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert named in message, message
    assert str(path) in message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.toml")


@pytest.mark.parametrize(("name", "value"), [
    ("TALLYGATE_PORT", "eighty"), ("TALLYGATE_WORKERS", "-2"),
    ("TALLYGATE_DURABILITY", "sometimes"), ("TALLYGATE_DATABASE_URL", "redis://x"),
])
def test_a_bad_environment_value_is_a_config_error_naming_it(
        monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    setting = name.removeprefix("TALLYGATE_").lower()
    with pytest.raises(ConfigError, match=setting):
        load_settings()


def test_a_bad_flag_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(port=0)


def test_the_admin_token_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYGATE_ADMIN_TOKEN", "tga-very-secret-value")
    settings = load_settings()
    assert "tga-very-secret-value" not in repr(settings)
    assert "tga-very-secret-value" not in str(settings.model_dump())
    assert "tga-very-secret-value" not in settings.model_dump_json()


@pytest.mark.parametrize("token", ["", " ", "short-secret", "a token with spaces in it",
                                   "tga-tab\tinside-the-token"])
def test_a_weak_admin_token_is_refused_without_repeating_it(
        token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty TALLYGATE_ADMIN_TOKEN= would otherwise be a credential anyone can type.
    monkeypatch.setenv("TALLYGATE_ADMIN_TOKEN", token)
    with pytest.raises(ConfigError, match="admin_token") as refused:
        load_settings()
    if token.strip():
        assert token not in str(refused.value)
    assert "input" not in str(refused.value)


def test_a_config_error_never_repeats_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYGATE_DATABASE_URL", "mysql://user:hunter2-password@db/usage")
    monkeypatch.setenv("TALLYGATE_ADMIN_TOKEN", "hunter2-admin-token-of-length")
    with pytest.raises(ConfigError, match="database_url") as refused:
        load_settings()
    # Not in the message, nor in an error chained to it (a traceback would print that).
    shown = "".join(traceback.format_exception(refused.value))
    assert "hunter2" not in shown and refused.value.__cause__ is None


def test_an_environment_value_that_is_not_json_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYGATE_ROUTES", "not json, hunter2")
    with pytest.raises(ConfigError, match="routes") as refused:
        load_settings()
    assert "hunter2" not in "".join(traceback.format_exception(refused.value))


def test_every_setting_is_documented() -> None:
    reference = settings_reference()
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"| `{name}` |" in reference, name
        if name not in ("routes", "providers"):
            assert f"`TALLYGATE_{name.upper()}`" in reference


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert load_settings(trusted_proxies=" 127.0.0.1, 10.0.0.0/8 ,fd00::/8,").trusted_proxies == \
        "127.0.0.1,10.0.0.0/8,fd00::/8"
    assert load_settings().trusted_proxies == ""  # none by default
    # Host bits dropped, as uvicorn needs them (it would match nothing for 10.1.2.3/8).
    assert load_settings(trusted_proxies="10.1.2.3/8,192.168.1.10/24").trusted_proxies == \
        "10.0.0.0/8,192.168.1.0/24"
    for bad in ("*", "proxy.internal", "10.0.0.0/33"):
        with pytest.raises(ConfigError, match="trusted_proxies"):
            load_settings(trusted_proxies=bad)


def test_providers_from_the_file_with_each_kinds_default_base_url(tmp_path: Path) -> None:
    path = tmp_path / "tallygate.toml"
    path.write_text('[[providers]]\nname = "openai-main"\nkind = "openai"\n'
                    'admin_key_env = "OPENAI_ADMIN_KEY"\napi_key_ids = ["key_abc"]\n'
                    '[[providers]]\nname = "claude"\nkind = "anthropic"\n'
                    'admin_key_env = "ANTHROPIC_ADMIN_KEY"\n'
                    '[[providers]]\nname = "test"\nkind = "openai"\n'
                    'base_url = "http://127.0.0.1:9/v1/"\nadmin_key_env = "K"\n'
                    '[[routes]]\nmodel = "gpt-4o"\nbase_url = "https://api.openai.com/v1"\n'
                    'provider = "openai-main"\n')
    settings = load_settings(path)
    urls = [p.base_url for p in settings.providers]
    assert urls == ["https://api.openai.com/v1", "https://api.anthropic.com/v1",
                    "http://127.0.0.1:9/v1"]
    assert settings.providers[0].api_key_ids == ["key_abc"]
    assert settings.routes[0].provider == "openai-main"
    assert settings.reconcile_tolerance == 0 and settings.reconcile_interval_s == 0


@pytest.mark.parametrize(("toml", "named"), [
    ('[[routes]]\nmodel = "m"\nbase_url = "http://u/v1"\nprovider = "nope"\n',
     "routes[0] (model 'm'): provider: 'nope' names no [[providers]] entry"),
    ('[[providers]]\nname = "p"\nkind = "azure"\nadmin_key_env = "K"\n', "providers.0.kind"),
    ('[[providers]]\nname = "p"\nkind = "openai"\n', "providers.0.admin_key_env"),
    ('[[providers]]\nname = "p"\nkind = "openai"\nadmin_key_env = "K"\n'
     '[[providers]]\nname = "p"\nkind = "anthropic"\nadmin_key_env = "K"\n',
     "providers[1]: name 'p' is declared twice"),
])
def test_a_bad_provider_is_a_config_error_naming_the_field(tmp_path: Path, toml: str,
                                                           named: str) -> None:
    path = tmp_path / "tallygate.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert named in str(raised.value)
