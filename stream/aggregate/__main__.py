"""``python -m stream.aggregate``: the aggregator without the rest of the CLI."""

from stream.aggregate.cli import aggregate

aggregate(prog_name="python -m stream.aggregate")
