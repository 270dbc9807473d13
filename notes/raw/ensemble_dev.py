"""Dev-only check (notes/issue3.md, fifth session): equal-weight ensemble of two bundles.

Loads both bundles as the worker does (int8, after the self-check), labels the agreed dev
tweets of each task, and compares dev macro-F1 of each bundle with the equal-weight average of
their calibrated logits, with a new temperature fitted on dev. Test is never loaded.
usage: python notes/raw/ensemble_dev.py BUNDLE_A BUNDLE_B
"""

import sys
from pathlib import Path

import numpy as np

from stream.data.crisismmd import find_dataset, load_split
from stream.fusion import fit_temperature
from stream.models import train
from stream.models.bundle import load_bundle
from stream.models.heads import softmax

data = find_dataset()
assert data is not None
bundles = [load_bundle(Path(p), threads=2) for p in sys.argv[1:3]]
for b in bundles:
    print(b.path, b.precision, b.int8_check)
for task, labels in train.LABELS.items():
    rows = load_split(data, task, "dev")
    texts = [r.text for r in rows]
    y = np.array([labels.index(r.label) for r in rows])
    zs = []
    for b in bundles:
        head = next(h for h in b.heads if h.task == task)
        assert head.labels == labels
        out = head.predict(b.encoder.encode(texts).embeddings, b.analyse(texts))
        z = out.logits / head.temperature
        zs.append(z)
        m = train.evaluate(softmax(z), y, labels, head.review_threshold)
        print(f"{task} {b.path.name}: dev acc {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f}")
    z = 0.5 * zs[0] + 0.5 * zs[1]
    t = fit_temperature(z, y)
    th = train.choose_review_threshold(softmax(z / t), y)
    m = train.evaluate(softmax(z / t), y, labels, th)
    print(f"{task} ensemble: dev acc {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f} "
          f"T={t:.3f} review<{th} per-class {m['per_class_f1']}", flush=True)
