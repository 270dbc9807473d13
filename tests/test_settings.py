"""Settings as an operator meets them: closed value sets, one-line errors naming the variable,
warnings for variables nothing reads, librdkafka properties of any scalar type, and the
``config`` command. (Secrets: tests/test_security.py; client.properties:
tests/test_client_properties.py; exit codes: tests/test_exit_codes.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer

from stream.cli.config import config
from stream.errors import ConfigError
from stream.settings import Settings
from stream.settings_load import (
    OTHER_VARIABLES,
    load_settings,
    setting_variables,
    unknown_variables,
)
from stream.settings_reference import render_reference

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-84736251"
TYPOS = {"CRISIS_BATCH_MAX_EVENT", "CRISIS_BOOTSTRAP_SERVER", "CRISIS_QQQQQQQQQQ"}


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("CRISIS_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("CRISIS_SECURITY_PROTOCOL", "sasl_ssl", "security_protocol", "SASL_SSL"),
        ("CRISIS_SASL_MECHANISM", "scram-sha-512", "sasl_mechanism", "SCRAM-SHA-512"),
        ("CRISIS_AUTO_OFFSET_RESET", "Latest", "auto_offset_reset", "latest"),
        ("CRISIS_PRECISION", "FP32", "precision", "fp32"),
        (
            "CRISIS_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
            "none",
            "ssl_endpoint_identification_algorithm",
            "none",
        ),
    ],
)
def test_closed_sets_take_any_case(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: str
):
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), field) == expected


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "CRISIS_BATCH_MAX_EVENTS",
            "abc",
            "CRISIS_BATCH_MAX_EVENTS: input should be a valid integer",
        ),
        ("CRISIS_LOG_LEVEL", "verbose", "CRISIS_LOG_LEVEL: input should be 'DEBUG', 'INFO'"),
        ("CRISIS_PRECISION", "int4", "CRISIS_PRECISION: input should be 'int8' or 'fp32'"),
        (
            "CRISIS_SECURITY_PROTOCOL",
            "TLS",
            "CRISIS_SECURITY_PROTOCOL: input should be 'PLAINTEXT'",
        ),
        ("CRISIS_SASL_MECHANISM", "SCRAM-MD5", "CRISIS_SASL_MECHANISM: input should be 'PLAIN'"),
        ("CRISIS_AUTO_OFFSET_RESET", "smallest", "CRISIS_AUTO_OFFSET_RESET: input should be"),
        ("CRISIS_COMMIT_WAIT_S", "-1", "CRISIS_COMMIT_WAIT_S: input should be greater than 0"),
        ("CRISIS_KAFKA", '["a"]', "CRISIS_KAFKA: input should be a valid dictionary"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text
    assert value not in text  # what was given is never echoed (it may be a secret)


def test_every_bad_variable_is_named_and_no_input_is_echoed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CRISIS_BATCH_MAX_EVENTS", SECRET)
    monkeypatch.setenv("CRISIS_SASL_PASSWORD_FILE", "/nonexistent/sasl")
    monkeypatch.setenv("CRISIS_METRICS_PORT", SECRET)
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert SECRET not in text and "\n" not in text
    assert "CRISIS_BATCH_MAX_EVENTS: input should be a valid integer" in text
    assert "CRISIS_METRICS_PORT: input should be a valid integer" in text


def test_secret_file_errors_name_the_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("CRISIS_SSL_KEY_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^CRISIS_SSL_KEY_PASSWORD_FILE=.*: cannot read it"):
        load_settings()
    (tmp_path / "key").write_text(SECRET)
    monkeypatch.setenv("CRISIS_SSL_KEY_PASSWORD_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("CRISIS_SSL_KEY_PASSWORD", "other")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value) == "set CRISIS_SSL_KEY_PASSWORD or CRISIS_SSL_KEY_PASSWORD_FILE, not both"


def test_overrides_are_checked_like_the_environment():
    with pytest.raises(ConfigError, match=r"^CRISIS_PRECISION: input should be 'int8' or 'fp32'$"):
        load_settings(precision="int4")


def test_unknown_variables_are_named_with_the_closest_setting():
    env = {
        "CRISIS_BATCH_MAX_EVENT": "64",
        "CRISIS_BOOTSTRAP_SERVER": "kafka:9092",
        "CRISIS_QQQQQQQQQQ": "1",
        "CRISIS_BATCH_MAX_EVENTS": "64",
        "CRISIS_SASL_PASSWORD_FILE": "/run/secrets/x",
        "CRISIS_SSL_KEY_PASSWORD_FILE": "/run/secrets/y",
        "CRISIS_FAULT_CRASH": "after_produce:3",
        "CRISIS_AGG_WINDOW_S": "60",
        "CRISIS_CLIENT_PROPERTIES": "/etc/kafka/client.properties",
        "crisis_log_level": "info",
        "PATH": "/bin",
    }
    assert unknown_variables(env) == [
        "CRISIS_BATCH_MAX_EVENT is not a setting (did you mean CRISIS_BATCH_MAX_EVENTS?)",
        "CRISIS_BOOTSTRAP_SERVER is not a setting (did you mean CRISIS_BOOTSTRAP_SERVERS?)",
        "CRISIS_QQQQQQQQQQ is not a setting",
    ]


def _variables_named_in(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            if (
                path.suffix in {".py", ".md", ".yml", ".yaml", ".toml", ""}
                and path.name != "CHANGELOG.md"
            ):
                text = path.read_text(encoding="utf-8", errors="replace")
                names |= set(re.findall(r"\bCRISIS_[A-Z0-9_]*[A-Z0-9]\b", text))
    return names


def test_every_variable_the_repository_names_is_known():
    """A variable read with os.environ or named in docs/deploy files must not be reported as
    unknown: register it in stream/settings_load.py (OTHER_VARIABLES) or make it a setting."""
    named = _variables_named_in(
        [
            REPO / "stream",
            REPO / "tests",
            REPO / "deploy",
            REPO / "docs",
            REPO / "docker-compose.yml",
        ]
    )
    named -= TYPOS  # the examples of mistakes, here and in the docs
    assert len(named) > 60
    assert unknown_variables(dict.fromkeys(named, "1")) == []


def test_the_aggregate_command_options_are_known_variables():
    from stream.cli.aggregate import aggregate

    envvars = {p.envvar for p in aggregate.params if isinstance(p.envvar, str)}
    assert envvars and envvars <= OTHER_VARIABLES | setting_variables()


def test_kafka_properties_take_any_scalar(monkeypatch: pytest.MonkeyPatch):
    """Numbers and booleans as librdkafka wants them (strings), null drops a property."""
    monkeypatch.setenv(
        "CRISIS_KAFKA",
        json.dumps(
            {
                "fetch.wait.max.ms": 20,
                "enable.partition.eof": True,
                "socket.keepalive.enable": False,
                "topic.metadata.refresh.interval.ms": 1.5e4,
                "client.id": None,
            }
        ),
    )
    kafka = load_settings().kafka_common()
    assert kafka["fetch.wait.max.ms"] == "20" and kafka["enable.partition.eof"] == "true"
    assert kafka["socket.keepalive.enable"] == "false"
    assert kafka["topic.metadata.refresh.interval.ms"] == "15000.0"
    assert "client.id" not in kafka
    # librdkafka takes every one of them (a value it refuses raises here)
    Consumer({**kafka, "topic.metadata.refresh.interval.ms": "15000", "group.id": "g"}).close()


def test_env_var_names_are_unchanged():
    """Literal types changed no variable: the reference still lists the same names."""
    for name in (
        "CRISIS_LOG_LEVEL",
        "CRISIS_PRECISION",
        "CRISIS_AUTO_OFFSET_RESET",
        "CRISIS_SECURITY_PROTOCOL",
        "CRISIS_SASL_MECHANISM",
        "CRISIS_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
        "CRISIS_CLIENT_PROPERTIES",
    ):
        assert f"| `{name}` |" in render_reference()
    row = next(r for r in render_reference().splitlines() if r.startswith("| `CRISIS_LOG_LEVEL`"))
    assert "`DEBUG` \\| `INFO` \\| `WARNING` \\| `ERROR` \\| `CRITICAL`" in row


def test_config_prints_the_effective_settings_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("CRISIS_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("CRISIS_KAFKA", json.dumps({"sasl.oauthbearer.client.secret": SECRET}))
    monkeypatch.setenv("CRISIS_BATCH_MAX_EVENTS", "8")
    res = CliRunner().invoke(config, [])
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output
    doc = orjson.loads(res.stdout)
    assert doc["settings"]["CRISIS_BATCH_MAX_EVENTS"] == 8
    assert doc["settings"]["CRISIS_SASL_PASSWORD"] == "**********"
    assert doc["settings"]["CRISIS_KAFKA"] == {"sasl.oauthbearer.client.secret": "**********"}
    assert doc["librdkafka"]["sasl.password"] == "**********"
    assert set(doc["settings"]) == {f"CRISIS_{n.upper()}" for n in Settings.model_fields}


def test_config_reference_is_the_markdown_reference():
    res = CliRunner().invoke(config, ["--reference"])
    assert res.exit_code == 0 and res.output == render_reference()


def test_config_warns_about_unknown_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CRISIS_BATCH_MAX_EVENT", "64")
    res = CliRunner().invoke(config, [])
    assert res.exit_code == 0
    assert (
        "warning: CRISIS_BATCH_MAX_EVENT is not a setting (did you mean CRISIS_BATCH_MAX_EVENTS?)"
        in res.stderr
    )
    assert orjson.loads(res.stdout)["settings"]["CRISIS_BATCH_MAX_EVENTS"] == 32
