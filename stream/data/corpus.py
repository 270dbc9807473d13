"""Every labelled crisis message there is, as one de-duplicated table grouped by event.

Sources (under the datasets root, ``../shared/datasets`` by default): CrisisMMD's 7 events of
2017 (the tweets' own text labels from the annotation files, 8 humanitarian classes merged to
the benchmark's 5), 13 CrisisLexT26 events of 2012-2013 (:mod:`stream.data.crisislex`) and the
Figure Eight training split (:mod:`stream.data.figure8`, grouped by genre).

De-duplication: retweets and copies of one text appear within and across sets; a copy in
training and evaluation would flatter every figure. Texts are compared after
:func:`dedup_key` (lowercase, links, handles and a leading ``RT`` removed, punctuation folded);
the first copy is kept, in the order CrisisMMD, CrisisLexT26, Figure Eight. A text in any
CrisisMMD dev or test split (of either task: the task splits overlap) marks its kept copy
``benchmark_held_out``, whichever set that copy came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import ftfy

from stream.data.annotations import HUMANITARIAN_MERGE
from stream.data.crisislex import LICENCE as CRISISLEX_LICENCE
from stream.data.crisislex import read_crisislex
from stream.data.crisismmd import SPLITS, tsv_records
from stream.data.figure8 import LICENCE as FIGURE8_LICENCE
from stream.data.figure8 import read_figure8
from stream.data.message import Message
from stream.tasks import LABELS

__all__ = ["CRISISMMD_LICENCE", "Corpus", "dedup_key", "load_corpus", "read_crisismmd"]

CRISISMMD_LICENCE = "CrisisMMD v2.0 (Alam, Ofli, Imran, ICWSM 2018), CC BY-NC-SA 4.0"
_LINK = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_HANDLE = re.compile(r"@\w+")
_RT = re.compile(r"^\s*rt\b[\s:]*")
_NON_WORD = re.compile(r"[^\w]+")


def dedup_key(text: str) -> str:
    """What two copies of one message share: no links, handles, leading RT or punctuation."""
    t = _HANDLE.sub(" ", _LINK.sub(" ", text.lower()))
    return " ".join(_NON_WORD.sub(" ", _RT.sub("", t.strip())).split())


def _benchmark_ids(data_dir: Path) -> set[str]:
    """Tweet ids of every CrisisMMD dev/test split: agreed (both tasks) and all-label."""
    splits = data_dir / "splits"
    paths = [p for s in SPLITS if s != "train" for p in splits.glob(f"agreed/*_{s}.tsv")]
    paths += [p for s in SPLITS if s != "train" for p in splits.glob(f"informative_all/*_{s}.tsv")]
    paths += list(splits.glob("humanitarian_all/*.tsv"))  # only dev and test were published
    return {rec["tweet_id"] for p in paths for rec in tsv_records(p)}


def read_crisismmd(data_dir: Path) -> list[Message]:
    """One message per annotated CrisisMMD tweet with its text labels (first row of a tweet)."""
    held = _benchmark_ids(data_dir)
    out: dict[str, Message] = {}
    for path in sorted((data_dir / "annotations").glob("*_final_data.tsv")):
        event = path.name.removesuffix("_final_data.tsv")
        for rec in tsv_records(path):
            tweet_id = rec["tweet_id"]
            if tweet_id in out:
                continue
            labels = {}
            if rec["text_info"] in LABELS["informative"]:
                labels["informative"] = rec["text_info"]
            human = HUMANITARIAN_MERGE.get(rec["text_human"], rec["text_human"])
            if human in LABELS["humanitarian"]:
                labels["humanitarian"] = human
            out[tweet_id] = Message(
                uid=f"crisismmd:{tweet_id}",
                source="crisismmd",
                event=event,
                text=ftfy.fix_text(rec["tweet_text"] or ""),
                labels=labels,
                benchmark_held_out=tweet_id in held,
            )
    return list(out.values())


@dataclass
class Corpus:
    """The de-duplicated messages and where they came from (for manifests and model cards)."""

    messages: list[Message]
    sources: dict[str, dict[str, object]] = field(default_factory=dict)
    duplicates_dropped: int = 0

    def events(self) -> list[str]:
        return sorted({m.event for m in self.messages})

    def labelled(self, task: str) -> list[Message]:
        return [m for m in self.messages if task in m.labels]


def _dedup(groups: Iterable[list[Message]]) -> tuple[list[Message], int]:
    kept: dict[str, Message] = {}
    dropped = 0
    for messages in groups:
        for m in messages:
            key = dedup_key(m.text)
            if not key or not m.labels:
                dropped += 1
                continue
            first = kept.get(key)
            if first is None:
                kept[key] = m
                continue
            dropped += 1
            first.benchmark_held_out = first.benchmark_held_out or m.benchmark_held_out
    return list(kept.values()), dropped


def load_corpus(root: Path, sources: Iterable[str] | None = None) -> Corpus:
    """The messages of every data set found under ``root`` (``crisismmd/``, ``crisislex_t26/``,
    ``figure8/``; a missing one is skipped), or only of ``sources``; raises FileNotFoundError
    when none is there."""
    readers = {
        "crisismmd": (read_crisismmd, CRISISMMD_LICENCE),
        "crisislex_t26": (read_crisislex, CRISISLEX_LICENCE),
        "figure8": (read_figure8, FIGURE8_LICENCE),
    }
    wanted = list(sources) if sources is not None else list(readers)
    groups: list[list[Message]] = []
    info: dict[str, dict[str, object]] = {}
    for name in wanted:
        reader, licence = readers[name]
        path = root / name
        if not path.is_dir():
            continue
        messages = reader(path)
        groups.append(messages)
        info[name] = {"path": str(path), "licence": licence, "messages": len(messages)}
    if not groups:
        raise FileNotFoundError(f"no crisis data set under {root} (looked for {', '.join(wanted)})")
    messages, dropped = _dedup(groups)
    for name in info:
        info[name]["kept"] = sum(m.source == name for m in messages)
        info[name]["events"] = len({m.event for m in messages if m.source == name})
    return Corpus(messages, info, dropped)
