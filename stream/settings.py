"""One settings class for the worker; every field reads ``CRISIS_<NAME>`` from the environment.

Kafka client options that crisis-stream does not model itself go through ``kafka`` (a dict of
librdkafka properties, e.g. ``CRISIS_KAFKA='{"security.protocol": "SASL_SSL"}'``); secrets are
``SecretStr`` so they never appear in logs or ``repr``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_REPO = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRISIS_", extra="ignore")

    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "crisis-stream"
    group_instance_id: str | None = Field(
        None,
        description="static group membership: a restarted worker with the same id gets "
        "its partitions back at once, without waiting for the dead member to expire",
    )
    input_topic: str = "crisis.events.raw"
    output_topic: str = "crisis.events.labeled"
    review_topic: str | None = "crisis.events.review"
    dlq_topic: str = "crisis.events.dlq"
    route_labels: bool = Field(
        False, description="also publish to <output_topic>.<task>.<label> per event"
    )
    route_tasks: list[str] = Field(default_factory=lambda: ["informative"])
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 2_000
    commit_interval_ms: int = 2_000
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    kafka: dict[str, str] = Field(default_factory=dict, description="extra librdkafka properties")

    # Model
    bundle: Path = _REPO / "models" / "minilm-crisis"
    precision: str | None = Field(None, description="int8 or fp32; default: the bundle's")
    threads: int | None = None
    ort_spinning: bool = Field(
        False,
        description="let onnxruntime intra-op threads busy-wait; off: faster on shared CPUs",
    )
    encoder_cache_size: int = Field(
        0,
        description="exact-text LRU of encoder outputs, in entries (~70 KB each); 0 = off: "
        "CrisisMMD has no exact duplicate texts, so it only costs there (notes/issue8.md)",
    )
    review_threshold: float | None = Field(None, description="override the bundle's threshold")
    rationale_top_k: int = 5

    # Batching and limits
    batch_max_events: int = Field(
        32, description="fastest int8 batch size on CrisisMMD (bench/encoder.py: 1, 8, 32, 64)"
    )
    batch_max_wait_ms: int = 100
    batch_max_tokens: int = 4096
    poll_max_records: int = 500
    poll_timeout_ms: int = 50
    max_in_flight: int = 2_000
    max_record_bytes: int = 4_000_000
    max_text_chars: int = 4_000

    # Operations
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    metrics_port: int | None = Field(None, description="serve /metrics, /healthz, /readyz")
    reload_interval_s: float = Field(2.0, description="bundle hot-reload check; 0 disables")
    kafka_stats_interval_ms: int = 5_000
    log_level: str = "INFO"

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka properties shared by consumer, producer and admin client."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(self.kafka)
        return conf

    def output_topics(self) -> list[str]:
        return [t for t in (self.output_topic, self.review_topic, self.dlq_topic) if t]
