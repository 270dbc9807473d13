"""``python -m stream.aggregate``: the aggregator without the rest of the CLI."""

from stream.cli.aggregate import aggregate

aggregate(prog_name="python -m stream.aggregate")
