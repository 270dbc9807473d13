"""``crisis-stream adapt``: the adaptation service."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from stream.adapt.answers import HELD_BACK_EVERY
from stream.adapt.correction import DEFAULT_L2
from stream.adapt.service import AdaptService
from stream.cli.env import settings as load_settings
from stream.ops.logs import configure

__all__ = ["adapt"]


@click.command("adapt")
@click.option(
    "--bundle",
    "base",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="the base bundle whose heads are adapted (default: CRISIS_BUNDLE)",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="directory of the journal and the versions; workers run with --bundle OUT/current",
)
@click.option("--every", type=int, default=25, show_default=True, help="adapt after N answers")
@click.option(
    "--interval",
    "interval_s",
    type=float,
    default=15.0,
    show_default=True,
    help="or this many seconds after the first answer not adapted to yet",
)
@click.option("--max-drop", type=float, default=0.02, show_default=True, help="gate's allowance")
@click.option(
    "--min-answers",
    type=int,
    default=10,
    show_default=True,
    help=f"answers a task needs before it is adapted (>= {HELD_BACK_EVERY}: some held back)",
)
@click.option("--l2", type=float, default=DEFAULT_L2, show_default=True, help="correction penalty")
@click.option("--group", default="crisis-adapt", show_default=True, help="consumer group")
@click.option(
    "--instance-id",
    default=None,
    help="static group membership id (default: GROUP-HOSTNAME): a restart resumes at once",
)
def adapt(
    base: Path | None,
    out: Path,
    every: int,
    interval_s: float,
    max_drop: float,
    min_answers: int,
    l2: float,
    group: str,
    instance_id: str | None,
) -> None:
    """Adapt a bundle's heads to analysts' answers on the feedback topic, publishing gated
    versions that workers on OUT/current hot-reload."""
    if min_answers < HELD_BACK_EVERY:
        raise click.BadParameter(f"must be >= {HELD_BACK_EVERY}", param_hint="--min-answers")
    settings = load_settings(bundle=base)
    configure(settings.log_level)
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    service = AdaptService(
        settings,
        settings.bundle,
        out,
        every,
        interval_s,
        group,
        instance_id,
        l2,
        max_drop,
        min_answers,
    )
    service.start()
    click.echo(f"adapting {settings.bundle} to {settings.feedback_topic}; serving {out}/current")
    service.run(stop)
