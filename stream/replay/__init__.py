"""Replays and backtests: label a bounded range of a topic through the live worker's code path,
compare bundles event by event, and report accuracy and calibration against gold labels."""

from stream.replay.backtest import run_backtest
from stream.replay.reader import Bound, ReplaySource, parse_bound, read_range
from stream.replay.run import ReplayResult, SinkTarget, parse_sink, replay

__all__ = [
    "Bound",
    "ReplayResult",
    "ReplaySource",
    "SinkTarget",
    "parse_bound",
    "parse_sink",
    "read_range",
    "replay",
    "run_backtest",
]
