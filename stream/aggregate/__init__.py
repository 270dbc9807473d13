"""Downstream aggregation of labelled events (faust-streaming): windowed counts per event and
label, top rationale words per label, and web views for analysts.

``run_aggregator`` is the programmatic entry; the ``crisis-stream aggregate`` command lives in
:mod:`stream.cli.aggregate`.
"""

from stream.aggregate.app import build_app, run_aggregator
from stream.aggregate.config import AggregatorConfig

__all__ = ["AggregatorConfig", "build_app", "run_aggregator"]
