"""Exit codes of ``crisis-stream``: distinct per cause, so a supervisor or CI job can react
(restart on a broker outage, page on a configuration error, block a release on a failed gate)."""

from __future__ import annotations

from enum import IntEnum

from stream.errors import BrokerError, BundleError, ConfigError, MissingExtraError

__all__ = ["EPILOG", "ExitCode", "exit_code"]


class ExitCode(IntEnum):
    OK = 0
    #: an unexpected error (a traceback), or a command's own failure: `label --strict` with a
    #: bad line, `replay` stopped on idle before the end of its range
    RUNTIME = 1
    #: click: an unknown option, a missing argument, a bad option value
    USAGE = 2
    #: settings that do not validate, inconsistent options, a missing optional dependency
    CONFIG = 3
    #: a model bundle that is missing, malformed or fails its checks
    BUNDLE = 4
    #: Kafka could not be reached, a local broker could not be started
    BROKER = 5
    #: `backtest --max-drop`: candidate A is worse than B by more than allowed
    GATE_FAILED = 6


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code of a deliberate error (:class:`~stream.errors.CrisisStreamError`)."""
    if isinstance(exc, ConfigError | MissingExtraError):
        return ExitCode.CONFIG
    if isinstance(exc, BundleError):
        return ExitCode.BUNDLE
    if isinstance(exc, BrokerError):
        return ExitCode.BROKER
    return ExitCode.RUNTIME


EPILOG = (
    "Exit codes: 0 ok, 1 runtime error, 2 usage, 3 configuration, 4 model bundle, "
    "5 broker, 6 backtest gate failed."
)
