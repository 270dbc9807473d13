"""Dev-only experiment (notes/issue3.md, fourth session): extra humanitarian train tweets.

For an existing bundle: re-embed the humanitarian agreed train/dev tweets and the extra
all-label train tweets with its int8 encoder, then mirror fit_heads.trained_heads for the
humanitarian task with the extras weighted w in {0, 0.5, 1}. The bundle's own stored head is
the fine-tuning head's direction when the build chose it (fixed_head refits its temperature,
which undoes the stored scale). Test is never loaded.
usage: python notes/raw/extra_hum_dev.py BUNDLE [ONLY_LABEL]
(ONLY_LABEL: keep only the extras with that label; then w in {0, 0.5, 1} as well)
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

from stream.data.annotations import humanitarian_extra_train
from stream.data.crisismmd import SPLITS, find_dataset, load_split
from stream.models import export, hybrid, train
from stream.models.fit_heads import held_out, informative_all

bundle = Path(sys.argv[1])
manifest = json.loads((bundle / "manifest.json").read_text())
spec = next(h for h in manifest["heads"] if h["task"] == "humanitarian" and h["kind"] == "trained")
data = find_dataset()
assert data is not None
rows = {(t, s): load_split(data, t, s) for t in train.LABELS for s in SPLITS}
every = informative_all(data)
held = {r.text for r in held_out(rows, every)}
clean = sorted({r.text for (_, s), rs in rows.items() if s == "train" for r in rs} - held)
lexicon = hybrid.fit_lexicon(clean)
hum_train, hum_dev = rows[("humanitarian", "train")], rows[("humanitarian", "dev")]
extra = humanitarian_extra_train(data, {r.tweet_id for r in hum_train}, held)
if len(sys.argv) > 2:
    extra = [r for r in extra if r.label == sys.argv[2]]
print(f"{bundle}: {len(hum_train)} train, {len(extra)} extra, {len(hum_dev)} dev tweets")
texts = sorted({r.text for r in hum_train + extra + hum_dev})
t0 = time.perf_counter()
table = export.embed(bundle / "text_encoder.int8.onnx", bundle / "tokenizer.json", texts)
print(f"embedded {len(texts)} texts in {time.perf_counter() - t0:.0f}s")
index = {t: i for i, t in enumerate(texts)}
labels = train.LABELS["humanitarian"]


def split(rs, weights=None):
    return train.Split.of(
        table[[index[r.text] for r in rs]], [r.label for r in rs], labels,
        [lexicon.analyse(r.text) for r in rs], weights,
    )


dev = split(hum_dev)
ft_chosen = spec["metrics"]["selection"].get("head") in (None, "finetuned") and spec["metrics"][
    "selection"
]["dev_macro_f1_by_head"]["finetuned"] > spec["metrics"]["selection"]["dev_macro_f1_by_head"][
    "logistic_regression"
]
ft = None
if ft_chosen:
    z = np.load(bundle / spec["file"])
    ft = train.fixed_head("humanitarian", labels, z["W"], z["b"], dev)
    print("fine-tuning head recovered from the bundle: dev macro-F1",
          ft.measure({"dev": dev})["dev"]["macro_f1"])
for w in (0.0, 0.5, 1.0):
    rs = hum_train + (extra if w > 0 else [])
    weights = np.array([1.0] * len(hum_train) + [w] * (len(rs) - len(hum_train)))
    tr = split(rs, weights)
    head = train.train_head("humanitarian", labels, tr, dev)
    lr_dev = head.measure({"dev": dev})["dev"]["macro_f1"]
    choice = "logistic_regression"
    if ft is not None and ft.measure({"dev": dev})["dev"]["macro_f1"] > lr_dev:
        head, choice = train.fixed_head("humanitarian", labels, ft.weight, ft.bias, dev), "ft"
    head = hybrid.hybridize(head, lexicon, tr, dev)
    m = head.measure({"dev": dev})["dev"]
    print(f"w={w}: LR C={head.metrics['selection']['C'] if 'selection' in head.metrics else '-'} "
          f"LR dev {lr_dev:.4f}, head {choice}, hybrid {head.metrics['hybrid']['weights']}, "
          f"dev acc {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f} "
          f"affected F1 {m['per_class_f1']['affected_individuals']:.3f}", flush=True)
