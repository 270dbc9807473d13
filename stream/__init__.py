"""crisis-stream: label crisis social-media events from Kafka with quantized ONNX encoders.

The public API is small: settings, schemas, the pipeline and worker, sources and sinks, and
``Classifier`` for labelling texts or events in-process without Kafka.
``Classifier``, ``Pipeline``, ``Worker`` and ``WorkerStats`` load on first use, so that importing
any part of the package (the CLI, the settings) does not start the model runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stream.errors import (
    BrokerError,
    BundleError,
    BundleIntegrityError,
    ConfigError,
    CrisisStreamError,
    InvalidEvent,
    MissingExtraError,
)
from stream.schemas import DeadLetter, InputEvent, LabeledEvent
from stream.settings import Settings

if TYPE_CHECKING:
    from stream.classifier import Classifier
    from stream.pipeline import Pipeline
    from stream.worker import Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "BundleError",
    "BundleIntegrityError",
    "Classifier",
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

_LAZY = {
    "Classifier": "stream.classifier",
    "Pipeline": "stream.pipeline",
    "Worker": "stream.worker",
    "WorkerStats": "stream.worker",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'stream' has no attribute {name!r}")
