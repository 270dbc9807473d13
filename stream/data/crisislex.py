"""CrisisLexT26 events (Olteanu et al., CSCW 2015; MIT) as labelled messages.

Each event directory holds ``<event>-tweets_labeled.csv`` (tweet id, text, information source,
information type, informativeness). Labels follow the contract in the datasets' README, so that
figures stay comparable with other work on the same data:

- informative: "Related and informative" -> informative; "Related - but not informative" and
  "Not related" -> not_informative; "Not applicable" -> no label;
- humanitarian: information type "Affected individuals", "Infrastructure and utilities",
  "Donations and volunteering", "Other Useful Information" / "Caution and advice" map onto the
  five CrisisMMD classes; informativeness "Not related" -> not_humanitarian; anything else
  (sympathy, not labelled, not applicable) -> no humanitarian label.
"""

from __future__ import annotations

import csv
from pathlib import Path

import ftfy

from stream.data.message import Message

__all__ = ["HUMANITARIAN", "INFORMATIVE", "LICENCE", "read_crisislex"]

LICENCE = "CrisisLexT26 (Olteanu et al., CSCW 2015), MIT"
INFORMATIVE = {
    "Related and informative": "informative",
    "Related - but not informative": "not_informative",
    "Not related": "not_informative",
}
HUMANITARIAN = {
    "Affected individuals": "affected_individuals",
    "Infrastructure and utilities": "infrastructure_and_utility_damage",
    "Donations and volunteering": "rescue_volunteering_or_donation_effort",
    "Other Useful Information": "other_relevant_information",
    "Caution and advice": "other_relevant_information",
}


def _labels(info_type: str, informativeness: str) -> tuple[str | None, str | None]:
    informative = INFORMATIVE.get(informativeness)
    if informativeness == "Not related":
        return informative, "not_humanitarian"
    return informative, HUMANITARIAN.get(info_type)


def read_crisislex(root: Path) -> list[Message]:
    """Every labelled tweet of every event under ``root`` (the ``crisislex_t26`` directory), in
    event order then file order; rows with neither label are skipped."""
    out: list[Message] = []
    for event_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(event_dir.glob("*-tweets_labeled.csv")):
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                next(reader, None)
                for row in reader:
                    if len(row) < 5:
                        continue
                    tweet_id, text, _source, info_type, informativeness = (
                        c.strip() for c in row[:5]
                    )
                    informative, humanitarian = _labels(info_type, informativeness)
                    if informative is None and humanitarian is None:
                        continue
                    out.append(
                        Message(
                            uid=f"crisislex_t26:{tweet_id}",
                            source="crisislex_t26",
                            event=event_dir.name,
                            text=ftfy.fix_text(text),
                            labels=_present(informative, humanitarian),
                        )
                    )
    return out


def _present(informative: str | None, humanitarian: str | None) -> dict[str, str]:
    labels = {"informative": informative, "humanitarian": humanitarian}
    return {task: label for task, label in labels.items() if label is not None}
