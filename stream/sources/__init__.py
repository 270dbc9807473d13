"""Sources: where input records come from (Kafka topics, JSONL files, in-memory lists)."""

from stream.sources.base import Record, Source
from stream.sources.jsonl import JsonlSource
from stream.sources.kafka import KafkaSource
from stream.sources.memory import MemorySource

__all__ = ["JsonlSource", "KafkaSource", "MemorySource", "Record", "Source"]
