"""One labelled crisis message, whatever data set it came from."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Message"]


@dataclass
class Message:
    """A message with its event (the unit of cross-event evaluation) and its labels per task.

    ``benchmark_held_out``: the text is in a CrisisMMD dev or test split (of any task): the
    shipped bundle never trains on it, so its CrisisMMD test figures stay comparable with papers.
    """

    uid: str
    source: str
    event: str
    text: str
    labels: dict[str, str] = field(default_factory=dict)
    benchmark_held_out: bool = False
    lang: str | None = None
