"""crisis-stream: label crisis social-media events from Kafka with quantized ONNX encoders.

The public API is small: settings, schemas, the pipeline and worker, sources and sinks.
"""

from stream.errors import (
    BrokerError,
    BundleError,
    BundleIntegrityError,
    ConfigError,
    CrisisStreamError,
    InvalidEvent,
    MissingExtraError,
)
from stream.pipeline import Pipeline
from stream.schemas import DeadLetter, InputEvent, LabeledEvent
from stream.settings import Settings
from stream.worker import Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "BundleError",
    "BundleIntegrityError",
    "ConfigError",
    "CrisisStreamError",
    "DeadLetter",
    "InputEvent",
    "InvalidEvent",
    "LabeledEvent",
    "MissingExtraError",
    "Pipeline",
    "Settings",
    "Worker",
    "WorkerStats",
    "__version__",
]
