"""``python -m stream.aggregate``: the aggregator without the rest of the CLI."""

from stream.cli import main
from stream.cli.aggregate import aggregate

main(aggregate, prog_name="python -m stream.aggregate")
