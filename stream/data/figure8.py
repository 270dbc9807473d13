"""The Figure Eight disaster-response training split (Munro; CC BY 4.0) as labelled messages.

Only ``figure8/disaster_response_training.csv`` is read (its validation and test splits are kept
apart for independent checks). ``message`` is the English text (SMS of the Haiti 2010 earthquake
and Pakistan 2010 floods translated, Hurricane Sandy tweets, news); the informative contract is
related = 1 and aid_related = 1 -> informative, related = 0 -> not_informative, any other row
(related but not about aid, or related = 2) -> no label. There is no humanitarian contract.
The ``genre`` (direct, social, news) is the group a cross-event fold holds out: the file names
no event per row.
"""

from __future__ import annotations

import csv
from pathlib import Path

import ftfy

from stream.data.message import Message

__all__ = ["FILE", "LICENCE", "read_figure8"]

FILE = "disaster_response_training.csv"
LICENCE = "Figure Eight disaster response messages (Munro), CC BY 4.0"


def _informative(related: str, aid_related: str) -> str | None:
    if related == "1" and aid_related == "1":
        return "informative"
    if related == "0":
        return "not_informative"
    return None


def read_figure8(root: Path) -> list[Message]:
    """The labelled rows of the training split under ``root`` (the ``figure8`` directory)."""
    out: list[Message] = []
    csv.field_size_limit(1 << 24)
    with (root / FILE).open(newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            label = _informative(rec.get("related", ""), rec.get("aid_related", ""))
            text = ftfy.fix_text(rec.get("message") or "")
            if label is None or not text.strip():
                continue
            out.append(
                Message(
                    uid=f"figure8:{rec['id']}",
                    source="figure8",
                    event=f"figure8_{rec.get('genre') or 'unknown'}",
                    text=text,
                    labels={"informative": label},
                )
            )
    return out
