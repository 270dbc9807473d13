"""Dev-split experiment: which word ranking gives the most faithful text rationale?"""
import sys, time
import numpy as np
from stream.data.crisismmd import find_dataset, load_split
from stream.models.bundle import load_bundle
from stream.faithfulness import remove_words, keep_words, _score
from stream.rationale import word_shares

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 800
task = sys.argv[3] if len(sys.argv) > 3 else "informative"
b = load_bundle("models/minilm-crisis")
head = next(h for h in b.heads if h.task == task)
rows = load_split(find_dataset(), task, split)[:limit]
texts = [r.text for r in rows]
t0 = time.time()
enc = b.encoder.encode(texts)
out = head.predict(enc.embeddings)
pred = out.pred
base = out.probs[np.arange(len(texts)), pred].astype(np.float64)
rankings = {k: [] for k in ["support", "abs", "centred", "centred_proj", "occlusion"]}
rng = np.random.default_rng(0)
randoms = []
words_all = []
for i in range(len(texts)):
    c = int(pred[i])
    d = head.weight[c] - head.weight.mean(axis=0)
    e = enc.embeddings[i]
    h = enc.tokens[i]
    m = h.mean(axis=0)
    shares = head.token_shares(h, float(enc.scale[i]), c)
    w = word_shares(enc.offsets[i], enc.word_ids[i], shares)
    cen = (h - m) @ d
    dp = d - (d @ e) * e
    cenp = (h - m) @ dp
    wc = word_shares(enc.offsets[i], enc.word_ids[i], cen)
    wp = word_shares(enc.offsets[i], enc.word_ids[i], cenp)
    words_all.append(w)
    n = len(w)
    rankings["support"].append(sorted(range(n), key=lambda j: -w[j][2]))
    rankings["abs"].append(sorted(range(n), key=lambda j: -abs(w[j][2])))
    rankings["centred"].append(sorted(range(n), key=lambda j: -wc[j][2]))
    rankings["centred_proj"].append(sorted(range(n), key=lambda j: -wp[j][2]))
    randoms.append([rng.permutation(n).tolist() for _ in range(3)])
# occlusion reference: drop each word alone
flat, owner = [], []
for i, w in enumerate(words_all):
    for j in range(len(w)):
        flat.append(remove_words(texts[i], [w[j][:2]])); owner.append((i, j))
sc = _score(b, head, flat, np.array([pred[i] for i, _ in owner])) if flat else []
drops = [dict() for _ in texts]
for (i, j), s in zip(owner, sc):
    drops[i][j] = base[i] - s
for i, w in enumerate(words_all):
    rankings["occlusion"].append(sorted(range(len(w)), key=lambda j: -drops[i][j]))
print(f"{len(texts)} {split} texts, mean words {np.mean([len(w) for w in words_all]):.1f}, setup {time.time()-t0:.0f}s", flush=True)

def measure(sets):
    rem = _score(b, head, [remove_words(t, s) for t, s in zip(texts, sets)], pred)
    kept = _score(b, head, [keep_words(t, s) for t, s in zip(texts, sets)], pred)
    return float(np.mean(base - rem)), float(np.mean(base - kept))

for k in [1, 2, 3, 5]:
    def spans(order_list):
        return [[words_all[i][j][:2] for j in order[:min(k, len(order))]] for i, order in enumerate(order_list)]
    rc = [measure(spans([r[q] for r in randoms])) for q in range(3)]
    crand = np.mean([x[0] for x in rc]); srand = np.mean([x[1] for x in rc])
    line = [f"k={k} random comp {crand:.3f} suff {srand:.3f}"]
    for name, lists in rankings.items():
        c, s = measure(spans(lists))
        line.append(f"{name}: comp {c:.3f} ({c/crand:.2f}x) suff {s:.3f}")
    print(" | ".join(line), flush=True)
