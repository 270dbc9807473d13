"""How much does an int8 label depend on the tweet's batch companions?

Dynamic int8 (onnxruntime DynamicQuantizeLinear) picks one activation scale per *tensor*, so a
tweet's embedding moves with the other tweets in its micro-batch. Encode the agreed dev tweets
(a) one at a time, (b) in length-sorted batches of 32 (the build's way), (c) in arrival-order
batches of 32 (the worker's way), and count label flips per task against (a).
usage: python notes/raw/batch_flips.py BUNDLE [PRECISION]
"""

import sys
from pathlib import Path

import numpy as np

from stream.data.crisismmd import find_dataset, load_split
from stream.models.bundle import load_bundle

bundle = load_bundle(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None, threads=1)
data = find_dataset()
assert data is not None
for head in bundle.heads:
    rows = load_split(data, head.task, "dev")
    texts = [r.text for r in rows]
    analyses = bundle.analyse(texts)

    def labels(x: np.ndarray) -> np.ndarray:
        return head.predict(x, analyses).logits.argmax(axis=1)

    alone = np.stack([bundle.encoder.encode([t]).embeddings[0] for t in texts])
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    sorted32 = np.zeros_like(alone)
    for s in range(0, len(order), 32):
        idx = order[s : s + 32]
        sorted32[idx] = bundle.encoder.encode([texts[i] for i in idx]).embeddings
    arrival32 = np.concatenate(
        [bundle.encoder.encode(texts[s : s + 32]).embeddings for s in range(0, len(texts), 32)]
    )
    base = labels(alone)
    for name, x in (("length-sorted 32", sorted32), ("arrival-order 32", arrival32)):
        cos = np.sum(alone * x, 1) / np.linalg.norm(alone, axis=1) / np.linalg.norm(x, axis=1)
        flips = int((labels(x) != base).sum())
        print(
            f"{bundle.precision} {head.task}: {name} vs one at a time: {flips}/{len(texts)} labels "
            f"differ ({100 * flips / len(texts):.1f} %), min cosine {cos.min():.4f}"
        )
