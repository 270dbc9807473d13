"""Downstream aggregation of labelled events (faust-streaming): windowed counts per event and
label, top rationale words per label, and web views for analysts.

``aggregate`` is the click command (registered on the ``crisis-stream`` CLI);
``run_aggregator`` is the programmatic entry.
"""

from stream.aggregate.app import build_app, run_aggregator
from stream.aggregate.cli import aggregate
from stream.aggregate.config import AggregatorConfig

__all__ = ["AggregatorConfig", "aggregate", "build_app", "run_aggregator"]
