"""Bootstrap intervals of the three int8 bundles on the agreed-label TEST splits, and paired
differences against the default bundle. Analysis of figures already reported (nothing is chosen
on it): how far the issue-3 bars sit from each bundle's noise.

Run: .venv/bin/python notes/raw/test_intervals.py > notes/raw/test-intervals.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from stream.metrics_ci import bootstrap_difference, bootstrap_intervals, _codes, _index_chunks, _scores
from stream.metrics_eval import label_order
from stream.replay.evaluate import label_events
from stream.replay.gold import read_events
from stream.runtime import build_pipeline
from stream.settings import Settings

SPLITS = Path("../shared/datasets/crisismmd/splits/agreed")
BUNDLES = {"minilm": "models/minilm-crisis", "mpnet": "models/mpnet-crisis", "e5": "models/e5-crisis"}
BARS = {"informative": (0.88, 0.86), "humanitarian": (0.82, 0.75)}


def main() -> None:
    preds: dict[tuple[str, str], list[str]] = {}
    gold: dict[str, list[str]] = {}
    labels: dict[str, list[str]] = {}
    for name, path in BUNDLES.items():
        pipeline = build_pipeline(Settings(bundle=Path(path), precision="int8"))
        for task in BARS:
            events = read_events(SPLITS / f"task_{task}_text_img_agreed_lab_test.tsv", task, None)
            out = label_events(pipeline, events, 32)
            gold[task] = [e.gold[task] for e in out if e.gold]
            preds[name, task] = [e.labels[task].label for e in out]
            labels[task] = label_order(list(out[0].labels[task].scores), gold[task], preds[name, task])
        print(f"labelled with {name}", file=sys.stderr)
    for task, (acc_bar, f1_bar) in BARS.items():
        print(f"\n## {task} test (n={len(gold[task])}), bars: accuracy {acc_bar}, macro-F1 {f1_bar}")
        for name in BUNDLES:
            y, p = gold[task], preds[name, task]
            iv = bootstrap_intervals(y, p, labels[task])
            t, q = _codes(y, labels[task]), _codes(p, labels[task])
            stats = np.concatenate([_scores(t[i], q[i], len(labels[task])) for i in _index_chunks(len(t), 1000, 0)])
            point = _scores(t[None], q[None], len(labels[task]))[0]
            share = (stats >= np.array([acc_bar, f1_bar])).mean(axis=0)
            a, f = iv["accuracy"], iv["macro_f1"]
            print(
                f"{name:7s} accuracy {point[0]:.4f} [{a.low:.4f}, {a.high:.4f}] (>= bar in {share[0]:.0%})"
                f"  macro-F1 {point[1]:.4f} [{f.low:.4f}, {f.high:.4f}] (>= bar in {share[1]:.0%})"
            )
        for name in ("mpnet", "e5"):
            d = bootstrap_difference(gold[task], preds["minilm", task], preds[name, task], labels[task])
            for m in ("accuracy", "macro_f1"):
                x = d[m]
                print(f"  {name} - minilm {m:8s} {x.delta:+.4f} [{x.low:+.4f}, {x.high:+.4f}], higher in {x.b_better:.0%}")


if __name__ == "__main__":
    main()
