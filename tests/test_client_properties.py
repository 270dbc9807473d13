"""``CRISIS_CLIENT_PROPERTIES``: a managed Kafka service's client.properties configures every
client (worker, admin, `produce`, aggregator), cleaned of what librdkafka refuses, below
the ``CRISIS_*`` settings in precedence, its secrets masked."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, KafkaException, Producer

from stream.cli.config import config
from stream.cli.local import produce
from stream.errors import ConfigError
from stream.kafka_properties import WORKER_OWNED, librdkafka_knows, parse_properties
from stream.local.demo import read_topic
from stream.ops.admin import ensure_topics
from stream.runtime import consumer_conf
from stream.settings_load import load_settings

from .conftest import BrokerHandle

SECRET = "cc-S3CRET-9f8e7d"
JAAS_SECRET = "msk-S3CRET-1a2b"

#: what Confluent Cloud hands out for a Python client, plus the Java and Schema Registry keys
#: its Java variant carries
CONFLUENT = f"""\
# Required connection configs for Kafka producer, consumer, and admin
bootstrap.servers=pkc-12345.eu-west-1.aws.confluent.cloud:9092
security.protocol=SASL_SSL
sasl.mechanisms=PLAIN
sasl.username=APIKEY123
sasl.password={SECRET}

# Best practice for higher availability in librdkafka clients prior to 1.7
session.timeout.ms=45000
client.dns.lookup=use_all_dns_ips
acks=all
ssl.truststore.location=/etc/kafka/truststore.jks
key.serializer=org.apache.kafka.common.serialization.StringSerializer
schema.registry.url=https://psrc-1.eu-west-1.aws.confluent.cloud
basic.auth.credentials.source=USER_INFO
basic.auth.user.info=SRKEY:{SECRET}
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return path


def test_java_properties_syntax():
    text = (
        "# comment\n! also a comment\n\n"
        "a=1\n b : 2 \nc 3\nd=x=y\ne=\n"
        "f=one \\\n    two\n"
        "g\\:h=\\u0041\\tb\n"
        "a=last wins\n"
    )
    assert parse_properties(text) == {
        "a": "last wins",
        "b": "2",
        "c": "3",
        "d": "x=y",
        "e": "",
        "f": "one two",
        "g:h": "A\tb",
    }


def test_a_confluent_cloud_file_configures_the_clients(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("CRISIS_CLIENT_PROPERTIES", str(_file(tmp_path, CONFLUENT)))
    s = load_settings()
    # Kafka settings the file gives fill the settings not set otherwise
    assert s.bootstrap_servers == "pkc-12345.eu-west-1.aws.confluent.cloud:9092"
    assert s.security_protocol == "SASL_SSL" and s.sasl_mechanism == "PLAIN"
    assert s.sasl_username == "APIKEY123" and s.session_timeout_ms == 45_000
    assert s.sasl_password is not None and s.sasl_password.get_secret_value() == SECRET
    conf = s.kafka_common()
    assert conf["client.dns.lookup"] == "use_all_dns_ips"
    assert conf["sasl.mechanism"] == "PLAIN" and "sasl.mechanisms" not in conf
    assert consumer_conf(s)["session.timeout.ms"] == 45_000
    dropped = {"acks", "ssl.truststore.location", "key.serializer", "schema.registry.url"}
    assert not dropped & set(conf) and not any(k.startswith("basic.auth.") for k in conf)
    assert s.warnings == [
        "client.properties: acks dropped: the worker sets it for at-least-once delivery",
        "client.properties: ssl.truststore.location dropped: not a librdkafka property",
        "client.properties: key.serializer dropped: not a librdkafka property",
        "client.properties: schema.registry.url dropped: not a librdkafka property",
        "client.properties: basic.auth.credentials.source dropped: not a librdkafka property",
        "client.properties: basic.auth.user.info dropped: not a librdkafka property",
    ]
    # librdkafka takes the result for every kind of client (an unknown key would raise)
    Producer({**conf, "bootstrap.servers": "127.0.0.1:1"}).flush(0)
    Consumer({**consumer_conf(s), "bootstrap.servers": "127.0.0.1:1"}).close()


def test_settings_and_crisis_kafka_win_over_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("CRISIS_CLIENT_PROPERTIES", str(_file(tmp_path, CONFLUENT)))
    monkeypatch.setenv("CRISIS_BOOTSTRAP_SERVERS", "kafka-1:9093")
    monkeypatch.setenv("CRISIS_SESSION_TIMEOUT_MS", "20000")
    monkeypatch.setenv(
        "CRISIS_KAFKA",
        json.dumps({"client.dns.lookup": "resolve_canonical_bootstrap_servers_only"}),
    )
    (tmp_path / "pw").write_text("from-secret-file\n")
    monkeypatch.setenv("CRISIS_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    s = load_settings()
    conf = s.kafka_common()
    assert conf["bootstrap.servers"] == "kafka-1:9093"
    assert consumer_conf(s)["session.timeout.ms"] == 20_000
    assert conf["client.dns.lookup"] == "resolve_canonical_bootstrap_servers_only"
    assert conf["sasl.password"] == "from-secret-file"  # not "set both" either
    assert (
        load_settings(bootstrap_servers="cli:9092").kafka_common()["bootstrap.servers"]
        == "cli:9092"
    )


def test_jaas_credentials_become_sasl_username_and_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """MSK and Aiven hand out Java configs; librdkafka has no JAAS."""
    text = (
        "bootstrap.servers=b-1.msk.example:9096\nsecurity.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        f'    username="crisis" password="{JAAS_SECRET}";\n'
    )
    monkeypatch.setenv("CRISIS_CLIENT_PROPERTIES", str(_file(tmp_path, text)))
    s = load_settings()
    assert s.sasl_mechanism == "SCRAM-SHA-512" and s.sasl_username == "crisis"
    assert s.kafka_common()["sasl.password"] == JAAS_SECRET
    assert "sasl.jaas.config" not in s.kafka_common() and s.warnings == []
    other = "sasl.jaas.config=com.example.OtherLoginModule required token=x;\n"
    monkeypatch.setenv("CRISIS_CLIENT_PROPERTIES", str(_file(tmp_path, other)))
    assert load_settings().warnings[0].startswith("client.properties: sasl.jaas.config dropped")


def test_file_secrets_are_masked_everywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    extra = "sasl.oauthbearer.client.secret=" + JAAS_SECRET + "\n"
    monkeypatch.setenv("CRISIS_CLIENT_PROPERTIES", str(_file(tmp_path, CONFLUENT + extra)))
    s = load_settings()
    assert s.kafka_common()["sasl.oauthbearer.client.secret"] == JAAS_SECRET
    for text in (repr(s), str(s), s.model_dump_json(), str(s.redacted()), str(s.redacted_kafka())):
        assert SECRET not in text and JAAS_SECRET not in text
    res = CliRunner().invoke(config, [])
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output and JAAS_SECRET not in res.output
    doc = orjson.loads(res.stdout)
    assert doc["librdkafka"]["sasl.password"] == "**********"
    assert doc["librdkafka"]["sasl.username"] == "APIKEY123"
    assert "warning: client.properties: acks dropped" in res.stderr


def test_a_bad_file_or_value_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("CRISIS_CLIENT_PROPERTIES", str(tmp_path / "missing.properties"))
    with pytest.raises(
        ConfigError, match=r"^CRISIS_CLIENT_PROPERTIES=.*missing.properties: cannot read"
    ):
        load_settings()
    monkeypatch.setenv(
        "CRISIS_CLIENT_PROPERTIES", str(_file(tmp_path, "session.timeout.ms=soon\n"))
    )
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert str(err.value).startswith(
        "session.timeout.ms in CRISIS_CLIENT_PROPERTIES: input should be a valid integer"
    )
    monkeypatch.setenv("CRISIS_SESSION_TIMEOUT_MS", "nope")  # then the variable is to blame
    with pytest.raises(ConfigError, match=r"^CRISIS_SESSION_TIMEOUT_MS: input should be"):
        load_settings()


def test_the_dropped_keys_are_what_librdkafka_refuses():
    """The probe agrees with librdkafka: a kept key builds a client, a dropped one does not."""
    for key, value in [
        ("session.timeout.ms", "45000"),
        ("client.dns.lookup", "use_all_dns_ips"),
        ("fetch.wait.max.ms", "x"),
    ]:
        assert librdkafka_knows(key, value), key
    for key in [
        "ssl.truststore.location",
        "sasl.jaas.config",
        "default.api.timeout.ms",
        "basic.auth.user.info",
    ]:
        assert not librdkafka_knows(key, "x"), key
        with pytest.raises(KafkaException):
            Producer({key: "x"})
    assert {"acks", "enable.idempotence", "enable.auto.commit"} <= WORKER_OWNED


@pytest.mark.kafka
def test_produce_and_admin_use_the_file(noida: BrokerHandle, tmp_path: Path):
    """A file holding only the broker address is enough for `crisis-stream produce`."""
    path = _file(tmp_path, f"bootstrap.servers={noida.bootstrap}\nclient.id=crisis-tests\n")
    topic = f"props-{tmp_path.name}"
    env = {"CRISIS_CLIENT_PROPERTIES": str(path), "CRISIS_BOOTSTRAP_SERVERS": None}
    s = load_settings(client_properties=path)
    assert s.kafka_common()["client.id"] == "crisis-tests"
    ensure_topics(s.kafka_common(), {topic: 1})
    events = tmp_path / "events.jsonl"
    events.write_text("".join(f'{{"id": "e{i}", "text": "flood {i}"}}\n' for i in range(5)))
    res = CliRunner().invoke(produce, [str(events), "--topic", topic], env=env)
    assert res.exit_code == 0 and "produced 5 records" in res.output, res.output
    assert len(read_topic(s.kafka_common(), topic, 5, timeout_s=20)) == 5
