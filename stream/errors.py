"""The small exception tree of crisis-stream.

Callers catch :class:`CrisisStreamError` for anything the project raises on purpose; the
subclasses say which part failed so a CLI or a supervisor can react (exit code, retry, refuse).
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BundleError",
    "BundleIntegrityError",
    "ConfigError",
    "CrisisStreamError",
    "InvalidEvent",
    "MissingExtraError",
]


class CrisisStreamError(Exception):
    """Base class of every error crisis-stream raises deliberately."""


class ConfigError(CrisisStreamError):
    """Settings are inconsistent or incomplete."""


class BrokerError(CrisisStreamError):
    """A local broker could not be started, or Kafka could not be reached."""


class BundleError(CrisisStreamError):
    """A model bundle is missing, malformed or incompatible."""


class BundleIntegrityError(BundleError):
    """A bundle file does not match the sha256 recorded in its manifest."""


class InvalidEvent(CrisisStreamError):
    """An input record cannot become an event; ``kind`` is the dead-letter reason code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class MissingExtraError(CrisisStreamError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module!r} is not installed; install it with: pip install 'crisis-stream[{extra}]'"
        )
        self.module = module
        self.extra = extra
