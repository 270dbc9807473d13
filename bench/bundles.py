"""Bundle against bundle: what an opt-in encoder (``models build --encoder mpnet`` or
``--encoder e5``) costs the worker, as ratios to the default MiniLM bundle measured interleaved
in the same process.

Two rates per bundle, on distinct CrisisMMD dev tweets (text events, no images): the bare text
encoder (int8, batches of 32) and the whole labelling step (``Pipeline.label``: encoder, hybrid
heads, rationales), plus each bundle's loaded size. The baseline is the first bundle.

    .venv/bin/python bench/bundles.py models/minilm-crisis models/mpnet-crisis models/e5-crisis
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from common import crisis_texts, interleaved_ratios, rss_mb, table, unique_texts

from stream.pipeline import Pipeline
from stream.runtime import build_pipeline
from stream.schemas import InputEvent, Origin
from stream.settings import Settings


def _encoder(pipe: Pipeline, texts: list[str]) -> Callable[[], int]:
    def run() -> int:
        pipe.bundle.encoder.encode(texts)
        return len(texts)

    return run


def _label(pipe: Pipeline, texts: list[str]) -> Callable[[], int]:
    events = [InputEvent(id=str(i), text=t) for i, t in enumerate(texts)]
    origins = [Origin(topic="t", partition=0, offset=i) for i in range(len(texts))]

    def run() -> int:
        for s in range(0, len(events), 32):
            pipe.label(events[s : s + 32], origins[s : s + 32])
        return len(events)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundles", type=Path, nargs="+", help="the first one is the baseline")
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    texts = unique_texts(crisis_texts(["dev"]))[: args.texts]
    pipes, loaded = {}, {}
    for path in args.bundles:
        before = rss_mb()
        pipes[path.name] = build_pipeline(Settings(bundle=path, reload_interval_s=0))
        loaded[path.name] = rss_mb() - before
    base = args.bundles[0].name
    configs: dict[str, Callable[[], int]] = {}
    for name, pipe in pipes.items():
        configs[f"{name} encoder"] = _encoder(pipe, texts)
        configs[f"{name} label"] = _label(pipe, texts)
    enc, enc_rates = interleaved_ratios(
        {k: v for k, v in configs.items() if k.endswith("encoder")}, f"{base} encoder", args.rounds
    )
    lab, lab_rates = interleaved_ratios(
        {k: v for k, v in configs.items() if k.endswith("label")}, f"{base} label", args.rounds
    )
    rows = [
        [
            name,
            enc[f"{name} encoder"],
            lab[f"{name} label"],
            enc_rates[f"{name} encoder"],
            lab_rates[f"{name} label"],
            loaded[name],
        ]
        for name in pipes
    ]
    print(f"{len(texts)} distinct dev tweets, median of {args.rounds} interleaved rounds")
    print(
        table(
            [
                "bundle",
                f"encoder / {base}",
                f"labelling / {base}",
                "encoder texts/s",
                "labelling texts/s",
                "MB added when loaded",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
