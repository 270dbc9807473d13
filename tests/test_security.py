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
