"""Security settings: SASL/TLS options reach librdkafka; secrets never show in repr or logs.

(Image URL fetching — off by default, allowlist, private/loopback addresses refused unless
``allow_private`` — is tested in tests/test_images.py: ``test_loopback_is_refused_without_
allow_private``, ``test_non_global_addresses_are_refused``, ``test_fetch_limits``.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from stream.images.source import ImageOptions
from stream.settings import Settings

from .conftest import BrokerHandle
from .worker_proc import WorkerProcess, worker_env

SECRET = "s3cr3t-Pa55w0rd"
KEY_SECRET = "k3y-Pa55"
TOKEN = "oauth-client-S3CRET"


def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRISIS_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CRISIS_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CRISIS_SASL_USERNAME", "crisis")
    monkeypatch.setenv("CRISIS_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("CRISIS_SSL_KEY_PASSWORD", KEY_SECRET)
    monkeypatch.setenv("CRISIS_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "https")
    monkeypatch.setenv("CRISIS_KAFKA", json.dumps({"sasl.oauthbearer.client.secret": TOKEN}))


def test_sasl_and_tls_settings_pass_through_to_librdkafka(monkeypatch: pytest.MonkeyPatch):
    _env(monkeypatch)
    conf = Settings().kafka_common()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "crisis" and conf["sasl.password"] == SECRET
    assert conf["ssl.key.password"] == KEY_SECRET
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert conf["sasl.oauthbearer.client.secret"] == TOKEN
    # librdkafka accepts every property as given (a typo would raise KafkaException here)
    Producer({**conf, "bootstrap.servers": "127.0.0.1:1", "sasl.mechanism": "PLAIN"}).flush(0)


def test_secrets_never_in_repr_or_dumps(monkeypatch: pytest.MonkeyPatch):
    _env(monkeypatch)
    s = Settings()
    for text in (repr(s), str(s), s.model_dump_json(), str(s.redacted())):
        for secret in (SECRET, KEY_SECRET, TOKEN):
            assert secret not in text
    assert s.redacted()["kafka"]["sasl.oauthbearer.client.secret"] == "**********"
    assert s.redacted()["sasl_password"] == "**********"


@pytest.mark.parametrize("value", [84736251, 8473.6251, True, ["84736251"], {"p": "84736251"}])
def test_a_non_string_secret_in_kafka_is_never_printed(
    monkeypatch: pytest.MonkeyPatch, value: object
):
    """A numeric (or otherwise mistyped) sasl.password is passed on as a string, and masked:
    it used to fail validation with an error that printed it."""
    monkeypatch.setenv("CRISIS_KAFKA", json.dumps({"sasl.password": value}))
    s = Settings()
    password = s.kafka_common()["sasl.password"]
    assert isinstance(password, str)
    assert password.strip('[]{}"p: ') in ("84736251", "8473.6251", "true")
    for text in (repr(s), str(s), s.model_dump_json(), str(s.redacted())):
        assert "84736251" not in text and "8473.6251" not in text


def test_settings_validation_errors_never_echo_their_input(monkeypatch: pytest.MonkeyPatch):
    from pydantic import ValidationError

    monkeypatch.setenv("CRISIS_KAFKA", '["84736251"]')
    monkeypatch.setenv("CRISIS_COMMIT_WAIT_S", "s3cr3t-84736251")
    with pytest.raises(ValidationError) as err:
        Settings()
    assert "84736251" not in str(err.value) and "kafka" in str(err.value)


def test_oauthbearer_config_is_masked(monkeypatch: pytest.MonkeyPatch):
    conf = "principal=crisis clientSecret=" + TOKEN
    monkeypatch.setenv("CRISIS_KAFKA", json.dumps({"sasl.oauthbearer.config": conf}))
    s = Settings()
    assert s.kafka_common()["sasl.oauthbearer.config"] == conf
    for text in (repr(s), str(s), s.model_dump_json(), str(s.redacted())):
        assert TOKEN not in text


def test_secret_settings_are_read_from_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    (tmp_path / "sasl").write_text(SECRET + "\n")
    (tmp_path / "key").write_text(KEY_SECRET)
    monkeypatch.setenv("CRISIS_SASL_PASSWORD_FILE", str(tmp_path / "sasl"))
    monkeypatch.setenv("CRISIS_SSL_KEY_PASSWORD_FILE", str(tmp_path / "key"))
    s = Settings()
    conf = s.kafka_common()
    assert conf["sasl.password"] == SECRET and conf["ssl.key.password"] == KEY_SECRET
    for text in (repr(s), s.model_dump_json(), str(s.redacted())):
        assert SECRET not in text and KEY_SECRET not in text
    fields = Settings.model_fields
    assert "CRISIS_SASL_PASSWORD_FILE" in (fields["sasl_password"].description or "")
    assert "CRISIS_SSL_KEY_PASSWORD_FILE" in (fields["ssl_key_password"].description or "")


def test_a_secret_file_that_cannot_be_read_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    from pydantic import ValidationError

    monkeypatch.setenv("CRISIS_SASL_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="CRISIS_SASL_PASSWORD_FILE"):
        Settings()
    (tmp_path / "both").write_text(SECRET)
    monkeypatch.setenv("CRISIS_SASL_PASSWORD_FILE", str(tmp_path / "both"))
    monkeypatch.setenv("CRISIS_SASL_PASSWORD", "other")
    with pytest.raises(ValidationError, match="not both") as err:
        Settings()
    assert SECRET not in str(err.value) and "other" not in str(err.value)


def test_image_fetch_is_off_and_private_addresses_refused_by_default(
    monkeypatch: pytest.MonkeyPatch,
):
    opts = ImageOptions.from_settings(Settings())
    assert not opts.fetch_enabled and not opts.fetch_allow_private
    assert not opts.fetch_policy().allow_private and opts.fetch_allow_hosts == ()
    monkeypatch.setenv("CRISIS_IMAGE_FETCH_ENABLED", "true")
    monkeypatch.setenv("CRISIS_IMAGE_FETCH_ALLOW_HOSTS", '["pbs.twimg.com"]')
    opts = ImageOptions.from_settings(Settings())
    assert opts.fetch_enabled and opts.fetch_allow_hosts == ("pbs.twimg.com",)
    assert not opts.fetch_policy().allow_private, "allowing hosts never allows private addresses"
    monkeypatch.setenv("CRISIS_IMAGE_FETCH_ALLOW_PRIVATE", "true")
    assert ImageOptions.from_settings(Settings()).fetch_policy().allow_private


@pytest.mark.parametrize(
    ("value", "hosts"),
    [
        ("*.twimg.com", ["*.twimg.com"]),
        (" *.twimg.com, pbs.example.org ,", ["*.twimg.com", "pbs.example.org"]),
        ('["pbs.twimg.com", "a.b"]', ["pbs.twimg.com", "a.b"]),
        ("", []),
    ],
)
def test_list_settings_read_json_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str, hosts: list[str]
):
    """A plain host name used to stop start-up (pydantic-settings wanted JSON)."""
    monkeypatch.setenv("CRISIS_IMAGE_FETCH_ALLOW_HOSTS", value)
    monkeypatch.setenv("CRISIS_ROUTE_TASKS", "informative,humanitarian")
    s = Settings()
    assert s.image_fetch_allow_hosts == hosts
    assert s.route_tasks == ["informative", "humanitarian"]


@pytest.mark.kafka
def test_worker_logs_never_contain_secrets(noida: BrokerHandle, tmp_path: Path):
    """A real worker with SASL against a broker that does not speak it: it logs its settings
    and librdkafka's security errors (with ``debug=security``), never the password."""
    settings = noida.settings()
    env = worker_env(
        settings,
        CRISIS_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        CRISIS_SASL_MECHANISM="PLAIN",
        CRISIS_SASL_USERNAME="crisis",
        CRISIS_SASL_PASSWORD=SECRET,
        CRISIS_KAFKA=json.dumps(
            {"debug": "security,broker", "sasl.oauthbearer.client.secret": TOKEN}
        ),
    )
    proc = WorkerProcess(env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 30
        while "sasl" not in proc.log_path.read_text().lower():
            assert proc.alive() and time.monotonic() < deadline, proc.log_tail()
            time.sleep(0.5)
        time.sleep(2)
    finally:
        proc.terminate()
    log = proc.log_path.read_text()
    assert '"sasl_password":"**********"' in log  # the settings were logged, masked
    assert SECRET not in log and TOKEN not in log
