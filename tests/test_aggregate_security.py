"""The aggregator connects with the worker's Kafka settings: the credentials faust hands aiokafka
and the librdkafka configuration of its admin client carry the same protocol, mechanism and
user. (No SASL broker runs here: the local brokers are plaintext, so this checks what would be
sent; tests/test_aggregate.py runs the aggregator against a real plaintext broker.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faust.auth import GSSAPICredentials, SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from stream.aggregate.app import build_app
from stream.aggregate.config import AggregatorConfig
from stream.aggregate.security import broker_credentials
from stream.errors import ConfigError
from stream.settings_load import load_settings

SECRET = "agg-S3CRET-77"


def _sasl_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRISIS_BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("CRISIS_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CRISIS_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("CRISIS_SASL_USERNAME", "crisis-agg")
    monkeypatch.setenv("CRISIS_SASL_PASSWORD", SECRET)


def test_the_faust_app_gets_sasl_ssl_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    _sasl_ssl(monkeypatch)
    kafka = load_settings().kafka_common()
    # the librdkafka side (the aggregator's admin client, the worker)
    assert kafka["security.protocol"] == "SASL_SSL"
    assert kafka["sasl.mechanism"] == "SCRAM-SHA-512" and kafka["sasl.username"] == "crisis-agg"
    app = build_app(AggregatorConfig(kafka=kafka), 3, tmp_path)
    assert [str(u) for u in app.conf.broker] == ["kafka://kafka-1:9093", "kafka://kafka-2:9093"]
    creds = app.conf.broker_credentials
    assert isinstance(creds, SASLCredentials)
    assert creds.username == "crisis-agg" and creds.password == SECRET
    assert creds.mechanism.value == "SCRAM-SHA-512" and creds.protocol.value == "SASL_SSL"
    assert creds.ssl_context is not None and creds.ssl_context.check_hostname
    assert SECRET not in repr(creds)
    # what faust passes to aiokafka's consumer and producer
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "crisis-agg"


def test_a_client_properties_file_configures_the_aggregator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    path = tmp_path / "client.properties"
    path.write_text(
        "bootstrap.servers=pkc-1.aws.confluent.cloud:9092\nsecurity.protocol=SASL_SSL\n"
        f"sasl.mechanisms=PLAIN\nsasl.username=KEY\nsasl.password={SECRET}\n"
    )
    monkeypatch.setenv("CRISIS_CLIENT_PROPERTIES", str(path))
    creds = broker_credentials(load_settings().kafka_common())
    assert isinstance(creds, SASLCredentials)
    assert (creds.mechanism.value, creds.protocol.value) == ("PLAIN", "SASL_SSL")
    assert (creds.username, creds.password) == ("KEY", SECRET)


def test_other_protocols(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    assert broker_credentials(load_settings().kafka_common()) is None  # plaintext
    monkeypatch.setenv("CRISIS_SECURITY_PROTOCOL", "SSL")
    ssl_creds = broker_credentials(load_settings().kafka_common())
    assert isinstance(ssl_creds, SSLCredentials) and ssl_creds.protocol.value == "SSL"
    monkeypatch.setenv("CRISIS_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "none")
    ssl_creds = broker_credentials(load_settings().kafka_common())
    assert isinstance(ssl_creds, SSLCredentials) and not ssl_creds.context.check_hostname
    monkeypatch.setenv("CRISIS_SSL_CA_LOCATION", str(tmp_path / "missing-ca.pem"))
    with pytest.raises(ConfigError, match="cannot set up TLS"):
        broker_credentials(load_settings().kafka_common())
    monkeypatch.delenv("CRISIS_SSL_CA_LOCATION")
    monkeypatch.setenv("CRISIS_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CRISIS_SASL_MECHANISM", "GSSAPI")
    gssapi = broker_credentials(load_settings().kafka_common())
    assert isinstance(gssapi, GSSAPICredentials) and gssapi.protocol.value == "SASL_PLAINTEXT"
    monkeypatch.setenv("CRISIS_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("CRISIS_KAFKA", json.dumps({"sasl.username": "u", "sasl.password": "p"}))
    plain = broker_credentials(load_settings().kafka_common())
    assert isinstance(plain, SASLCredentials) and plain.protocol.value == "SASL_PLAINTEXT"
    assert plain.ssl_context is None and plain.username == "u"
    monkeypatch.setenv("CRISIS_SASL_MECHANISM", "OAUTHBEARER")
    with pytest.raises(ConfigError, match="does not support SASL mechanism OAUTHBEARER"):
        broker_credentials(load_settings().kafka_common())
