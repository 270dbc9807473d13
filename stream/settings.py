"""One settings class for the worker; every field reads ``CRISIS_<NAME>`` from the environment.

Kafka client options that crisis-stream does not model itself go through ``kafka`` (a dict of
librdkafka properties, e.g. ``CRISIS_KAFKA='{"security.protocol": "SASL_SSL"}'``); secrets are
``SecretStr`` so they never appear in logs or ``repr``, validation errors never echo their input,
and every secret can also be read from a file (``CRISIS_SASL_PASSWORD_FILE=/run/secrets/x``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from stream.kafka_properties import read_client_properties

__all__ = [
    "CLIENT_PROPERTY_SETTINGS",
    "DEFAULT_BATCH_MAX_PIXELS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "Settings",
]

#: default cap on one image's width x height: a 6000 x 4000 (24 Mpx) camera photo
DEFAULT_MAX_PIXELS = 24_000_000
#: default cap on the pixels decoded per batch: about 1 s of decoding on one core (a
#: 5600 x 4200 PNG, 23.5 Mpx, takes 0.24 s), four maximum-size images or ~100 tweet photos
DEFAULT_BATCH_MAX_PIXELS = 100_000_000
#: default cap on one image's encoded bytes
DEFAULT_MAX_BYTES = 10_000_000

#: the checkout (or site-packages) directory that holds the ``stream`` package
REPO_ROOT = Path(__file__).resolve().parent.parent
#: librdkafka properties in ``kafka`` whose values are secrets (passwords, keys, tokens)
_SECRET_KEY = re.compile(r"password|secret|\.pem$|jaas|token|oauthbearer\.config", re.IGNORECASE)
#: secret settings, each also readable from the file named by ``<name>_file``
_SECRET_FIELDS = ("sasl_password", "ssl_key_password")
_MASK = "**********"
#: a list setting: from the environment a JSON list or comma-separated items
#: (``CRISIS_IMAGE_FETCH_ALLOW_HOSTS=*.twimg.com,pbs.example.org``)
EnvList = Annotated[list[str], NoDecode]
#: closed sets of values (case-insensitive from the environment)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"]
#: librdkafka properties a ``client.properties`` file may give instead of the setting
CLIENT_PROPERTY_SETTINGS = {
    "bootstrap.servers": "bootstrap_servers",
    "group.id": "group_id",
    "group.instance.id": "group_instance_id",
    "auto.offset.reset": "auto_offset_reset",
    "session.timeout.ms": "session_timeout_ms",
    "heartbeat.interval.ms": "heartbeat_interval_ms",
    "auto.commit.interval.ms": "commit_interval_ms",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
    "ssl.endpoint.identification.algorithm": "ssl_endpoint_identification_algorithm",
    "statistics.interval.ms": "kafka_stats_interval_ms",
}


class Settings(BaseSettings):
    # hide_input_in_errors: a mistyped secret (a numeric password) must not be echoed
    model_config = SettingsConfigDict(
        env_prefix="CRISIS_", extra="ignore", hide_input_in_errors=True
    )

    # Kafka
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers (host:port, comma-separated)"
    )
    group_id: str = Field(
        "crisis-stream",
        description="consumer group of the workers; replicas with the same id share the input "
        "partitions",
    )
    group_instance_id: str | None = Field(
        None,
        description="static group membership: a restarted worker with the same id gets "
        "its partitions back at once, without waiting for the dead member to expire",
    )
    input_topic: str = Field("crisis.events.raw", description="topic of raw input events")
    output_topic: str = Field("crisis.events.labeled", description="topic of labelled events")
    review_topic: str | None = Field(
        "crisis.events.review",
        description="topic that also gets events whose top probability is under the review "
        "threshold; unset: none",
    )
    feedback_topic: str = Field(
        "crisis.events.feedback",
        description="topic of analysts' answers (the review page writes it, the adaptation "
        "service reads it); run --create-topics creates it",
    )
    dlq_topic: str = Field(
        "crisis.events.dlq",
        description="dead-letter topic: undecodable inputs and outputs the broker refuses",
    )
    route_labels: bool = Field(
        False, description="also publish to <output_topic>.<task>.<label> per event"
    )
    route_tasks: EnvList = Field(
        default_factory=lambda: ["informative"], description="tasks route_labels publishes"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts"
    )
    session_timeout_ms: int = Field(
        10_000,
        description="consumer session timeout: how long a silent worker keeps its partitions",
    )
    heartbeat_interval_ms: int = Field(2_000, description="consumer heartbeat interval")
    commit_interval_ms: int = Field(
        2_000, description="auto-commit interval of stored offsets when commit_every_batch is off"
    )
    shutdown_timeout_s: float = Field(
        20.0,
        gt=0,
        description="after SIGTERM: longest time to label queued events, deliver, commit and "
        "close (keep it under the orchestrator's grace period: compose 30 s, Kubernetes 30 s "
        "by default)",
    )
    commit_every_batch: bool = Field(
        True,
        description="after each batch wait for its outputs' acks, then commit (waiting for "
        "the answer only while the previous batch's is out): a crash re-labels at most two "
        "batches; false commits every "
        "commit_interval_ms instead (fewer round trips, a wider duplicate window)",
    )
    commit_wait_s: float = Field(
        5.0, gt=0, description="longest wait for a batch's acks in commit_every_batch mode"
    )
    security_protocol: SecurityProtocol | None = Field(
        None, description="librdkafka security.protocol"
    )
    sasl_mechanism: SaslMechanism | None = Field(None, description="librdkafka sasl.mechanism")
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(
        None,
        description="SASL password (secret); or CRISIS_SASL_PASSWORD_FILE: a file holding it",
    )
    sasl_password_file: Path | None = Field(
        None, description="file whose content is sasl_password (e.g. /run/secrets/sasl_password)"
    )
    ssl_ca_location: str | None = Field(
        None, description="CA certificate file that signs the brokers' certificates"
    )
    ssl_certificate_location: str | None = Field(
        None, description="client certificate file (mutual TLS)"
    )
    ssl_key_location: str | None = Field(None, description="client private key file (mutual TLS)")
    ssl_key_password: SecretStr | None = Field(
        None,
        description="password of the client private key (secret); or "
        "CRISIS_SSL_KEY_PASSWORD_FILE: a file holding it",
    )
    ssl_key_password_file: Path | None = Field(
        None, description="file whose content is ssl_key_password"
    )
    ssl_endpoint_identification_algorithm: Literal["https", "none"] | None = Field(
        None,
        description="'https' (librdkafka's default) checks the broker's host name, 'none' does not",
    )
    kafka: dict[str, str] = Field(
        default_factory=dict,
        description="extra librdkafka properties (a JSON object; numbers and booleans are "
        "passed as strings; values of secret properties are masked everywhere)",
    )
    client_properties: Path | None = Field(
        None,
        description="a client.properties file (Java properties, as Confluent Cloud, MSK or "
        "Aiven hand out): its librdkafka properties go to every Kafka client, its Kafka "
        "settings fill those not set here; CRISIS_* settings and CRISIS_KAFKA win over it "
        "(see operations.md for the keys it drops)",
    )

    # Model
    bundle: Path = Field(REPO_ROOT / "models" / "e5-crisis", description="model bundle directory")
    precision: Literal["int8", "fp32"] | None = Field(
        None, description="encoder precision; default: the bundle's"
    )
    threads: int | None = Field(
        None,
        description="onnxruntime intra-op threads per encoder; default: the cgroup CPU quota "
        "(a container's CPU limit) rounded up, else onnxruntime's choice (one per core)",
    )
    ort_spinning: bool = Field(
        False,
        description="let onnxruntime intra-op threads busy-wait; off: faster on shared CPUs",
    )
    encoder_cache_size: int = Field(
        0,
        description="exact-text LRU of encoder outputs, in entries (~70 KB each); 0 = off: "
        "CrisisMMD has no exact duplicate texts, so it only costs there (bench/cache.py)",
    )
    review_threshold: float | None = Field(None, description="override the bundle's threshold")
    rationale_top_k: int = Field(5, description="rationale words per task in each labelled event")

    # Images (see stream/images/source.py): base64 is always accepted (size-capped); local
    # paths only under image_root; URL fetching only when enabled, for allowlisted hosts.
    image_max_bytes: int = Field(DEFAULT_MAX_BYTES, description="cap on one image's encoded bytes")
    image_max_pixels: int = Field(DEFAULT_MAX_PIXELS, description="cap on width x height (bombs)")
    image_batch_max_pixels: int = Field(
        DEFAULT_BATCH_MAX_PIXELS,
        gt=0,
        description="cap on the pixels (width x height, from the headers) decoded in one "
        "batch: images past it get image_error batch_pixel_budget and their events are "
        "labelled from text, so a batch of huge images cannot stall the worker",
    )
    image_root: Path | None = Field(None, description="directory image.path may point into")
    image_fetch_enabled: bool = Field(
        False, description="fetch image.url over HTTP(S) (only hosts in image_fetch_allow_hosts)"
    )
    image_fetch_allow_hosts: EnvList = Field(
        default_factory=list, description="host patterns image.url may name, e.g. *.twimg.com"
    )
    image_fetch_allow_private: bool = Field(
        False, description="allow private/loopback addresses (tests, closed networks only)"
    )
    image_fetch_timeout_s: float = Field(
        5.0,
        gt=0,
        description="deadline of one image fetch, all of it: connect, headers, body and "
        "redirects (a server that trickles bytes is cut off at it)",
    )
    image_fetch_concurrency: int = Field(
        8,
        ge=1,
        le=64,
        description="image URLs of one batch fetched at the same time (a thread pool of this "
        "size, kept across batches)",
    )
    image_fetch_batch_budget_s: float = Field(
        10.0,
        gt=0,
        description="longest a batch waits for its image URLs; those not fetched by then get "
        "image_error batch_fetch_budget and their events are labelled from text, so slow "
        "image servers cannot stall the worker",
    )
    image_cells_top_k: int | None = Field(None, description="image cells per label (default k)")

    # Batching and limits
    batch_max_events: int = Field(
        32,
        description="events per encoder call; per-token int8 encodes fastest at 8 (1.1x, "
        "bench/encoder.py), 32 spreads each batch's ack wait and commit over more events",
    )
    batch_max_wait_ms: int = Field(
        50,
        description="longest wait to fill a batch: p99 at batch 32 was lower than at 100 ms in "
        "every latency sweep (bench/latency.py); 25 ms lower still where the broker answers "
        "fetches at once",
    )
    batch_max_tokens: int = Field(
        4096, description="token budget of one batch (about 4 characters a token)"
    )
    poll_max_records: int = Field(
        500, description="most records taken from the consumer in one poll"
    )
    poll_timeout_ms: int = Field(50, description="longest wait of one consumer poll")
    prefetch_events: int = Field(
        1_000,
        ge=1,
        description="records the consumer keeps fetched ahead (librdkafka queued.min.messages, "
        "rechecked every 100 ms): seconds of this worker's work. librdkafka's 100,000 holds "
        "minutes of it in memory, fetched again by the next owner after a rebalance, and on a "
        "broker that answers empty fetches at once (noida-db) the consumer fetches in a loop "
        "once it has the whole backlog (docs/brokers.md)",
    )
    max_in_flight: int = Field(
        2_000,
        description="outputs awaiting acknowledgement before the input is paused (backpressure)",
    )
    max_in_flight_bytes: int = Field(
        128 * 1024 * 1024,
        gt=0,
        description="bytes of outputs awaiting acknowledgement (queued events included) before "
        "the input is paused: bounds memory when events are large",
    )
    max_record_bytes: int = Field(
        4_000_000, description="largest input record decoded; a larger one is dead-lettered"
    )
    max_output_bytes: int = Field(
        900_000,
        description="largest labelled output produced; a larger one (a huge meta copied "
        "through) is dead-lettered. Keep it under the producer's and the topic's "
        "message.max.bytes (librdkafka default 1,000,000)",
    )
    max_text_chars: int = Field(
        4_000, description="longest text labelled; a longer one is dead-lettered"
    )

    # Operations
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="name of this worker in every output event (default: host name and process id)",
    )
    metrics_port: int | None = Field(None, description="serve /metrics, /healthz, /readyz")
    metrics_host: str = Field(
        "127.0.0.1",
        description="address the /metrics, /healthz, /readyz server binds: loopback by "
        "default; the container image sets 0.0.0.0 so Prometheus and probes reach it over "
        "the container network (docs/decisions/0015)",
    )
    metrics_request_timeout_s: float = Field(
        5.0,
        gt=0,
        description="longest one request to the metrics/health server may take, from "
        "connecting to the last byte of the answer: a slow or silent client is disconnected",
    )
    review_port: int = Field(
        8091, ge=0, le=65535, description="port of the analysts' review page (crisis-stream review)"
    )
    review_host: str = Field(
        "127.0.0.1",
        description="address the review page binds: loopback by default, like the other "
        "servers (docs/decisions/0017); in a container, set 0.0.0.0",
    )
    review_public_hosts: EnvList = Field(
        default_factory=list,
        description="host names (host or host:port) the review page answers to besides "
        "localhost and loopback addresses, e.g. the name of a proxy in front of it; any other "
        "Host header is refused (DNS rebinding)",
    )
    reload_interval_s: float = Field(2.0, description="bundle hot-reload check; 0 disables")
    kafka_stats_interval_ms: int = Field(
        2_000, description="librdkafka statistics: lag metrics, and noticing a broker is back"
    )
    log_level: LogLevel = Field("INFO", description="log level of the JSON logs on stderr")

    _client_kafka: dict[str, str] = PrivateAttr(default_factory=dict)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("log_level", "security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "auto_offset_reset", "precision", "ssl_endpoint_identification_algorithm", mode="before"
    )
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _settings_from_client_properties(cls, data: Any) -> Any:
        """Kafka settings not set otherwise come from ``client_properties`` (a set variable
        wins; a secret given as ``<name>_file`` is never also taken from the file)."""
        if not isinstance(data, dict) or not data.get("client_properties"):
            return data
        try:
            props = read_client_properties(Path(data["client_properties"])).properties
        except ValueError as exc:
            raise ValueError(f"CRISIS_CLIENT_PROPERTIES={exc}") from None
        for prop, name in CLIENT_PROPERTY_SETTINGS.items():
            if prop in props and name not in data and f"{name}_file" not in data:
                data[name] = props[prop]
        return data

    @field_validator("route_tasks", "image_fetch_allow_hosts", mode="before")
    @classmethod
    def _env_list(cls, value: Any) -> Any:
        """A JSON list or comma-separated items: a plain ``*.twimg.com`` must not stop start-up."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            return orjson.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]

    @field_validator("kafka", mode="before")
    @classmethod
    def _kafka_strings(cls, value: Any) -> Any:
        """librdkafka takes strings: every value becomes one (numbers and booleans as
        librdkafka writes them, lists and objects as JSON, null drops the property), so a
        mistyped secret is never a validation error that could print it."""
        if not isinstance(value, dict):
            return value
        out: dict[str, str] = {}
        for key, item in value.items():
            if item is None:
                continue
            if isinstance(item, bool):
                out[str(key)] = "true" if item else "false"
            elif isinstance(item, str | int | float):
                out[str(key)] = str(item)
            else:
                out[str(key)] = orjson.dumps(item).decode()
        return out

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        """``<secret>_file``: the secret is the file's content (one trailing newline dropped)."""
        for name in _SECRET_FIELDS:
            path: Path | None = getattr(self, f"{name}_file")
            if path is None:
                continue
            var = f"CRISIS_{name.upper()}"
            if getattr(self, name) is not None:
                raise ValueError(f"set {var} or {var}_FILE, not both")
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"{var}_FILE={path}: cannot read it ({exc.strerror})") from None
            except UnicodeError:
                raise ValueError(f"{var}_FILE={path}: not UTF-8 text") from None
            setattr(self, name, SecretStr(text.removesuffix("\n").removesuffix("\r")))
        return self

    @model_validator(mode="after")
    def _client_properties_rest(self) -> Settings:
        """The file's other librdkafka properties, for :meth:`kafka_common`."""
        if self.client_properties is not None:
            found = read_client_properties(self.client_properties)
            rest = {k: v for k, v in found.properties.items() if k not in CLIENT_PROPERTY_SETTINGS}
            self._client_kafka, self._warnings = rest, found.warnings
        return self

    @property
    def warnings(self) -> list[str]:
        """What was dropped from ``client_properties``, one line each."""
        return list(self._warnings)

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka properties shared by consumer, producer and admin client: those of
        ``client_properties``, then the settings above, then ``kafka``."""
        conf: dict[str, Any] = {**self._client_kafka, "bootstrap.servers": self.bootstrap_servers}
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, value in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
            ("ssl.endpoint.identification.algorithm", self.ssl_endpoint_identification_algorithm),
        ):
            if value:
                conf[key] = value
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        conf.update(self.kafka)
        return conf

    @field_serializer("kafka", when_used="json")
    def _mask_kafka(self, kafka: dict[str, str]) -> dict[str, str]:
        """JSON dumps mask secret librdkafka properties like SecretStr fields mask theirs."""
        return _redact_kafka(kafka.items())

    def redacted(self) -> dict[str, Any]:
        """All settings as JSON-ready data with every secret masked: what the worker logs."""
        doc: dict[str, Any] = self.model_dump(mode="json")
        return doc

    def redacted_kafka(self) -> dict[str, Any]:
        """:meth:`kafka_common` with every secret value masked."""
        return _redact_kafka(self.kafka_common().items())

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """``repr`` masks secrets in ``kafka`` too (SecretStr fields mask themselves)."""
        for name, value in super().__repr_args__():
            yield name, _redact_kafka(value.items()) if name == "kafka" else value

    def output_topics(self) -> list[str]:
        return [t for t in (self.output_topic, self.review_topic, self.dlq_topic) if t]

    def route_topics(self, labels: dict[str, list[str]]) -> list[str]:
        """``<output_topic>.<task>.<label>`` for every label of every routed task, given each
        task's labels (the bundle's): the topics ``route_labels`` publishes to."""
        if not self.route_labels:
            return []
        return [
            f"{self.output_topic}.{task}.{label}"
            for task in self.route_tasks
            for label in labels.get(task, [])
        ]


def _redact_kafka(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    return {k: _MASK if _SECRET_KEY.search(k) else v for k, v in items}
