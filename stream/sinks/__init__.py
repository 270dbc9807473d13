"""Sinks: where outputs go (Kafka topics, JSONL files, memory)."""

from stream.sinks.base import DeliveryCallback, Sink, SinkFull, SinkRejected, SinkUnavailable
from stream.sinks.jsonl import JsonlSink
from stream.sinks.kafka import KafkaDeliveryError, KafkaSink
from stream.sinks.memory import MemorySink

__all__ = [
    "DeliveryCallback",
    "JsonlSink",
    "KafkaDeliveryError",
    "KafkaSink",
    "MemorySink",
    "Sink",
    "SinkFull",
    "SinkRejected",
    "SinkUnavailable",
]
