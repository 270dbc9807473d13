"""Exact-text encoder cache (issue 8, item 2): gain at CrisisMMD's real duplicate rate, and at
the duplicate rate of the repeated benchmark stream, as ratios vs no cache in the same process.

    .venv/bin/python bench/cache.py           # ~1 minute
    .venv/bin/python bench/cache.py --full
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from common import BUNDLE, crisis_texts, interleaved, met, repeat_to, table, unique_texts

from stream.models.bundle import load_bundle
from stream.models.cache import EncoderCache
from stream.models.text import TextEncoder


def stream_run(enc: TextEncoder, texts: Sequence[str], size: int, batch: int) -> Callable[[], int]:
    """Encode ``texts`` in arrival-order batches, a fresh cache of ``size`` per run (0: none)."""

    def go() -> int:
        enc.cache = EncoderCache(size) if size else None
        for s in range(0, len(texts), batch):
            enc.encode(texts[s : s + batch])
        return len(texts)

    return go


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--size", type=int, default=4096, help="cache entries")
    args = ap.parse_args()
    n, rounds = (4000, 3) if args.full else (640, 2)
    all_texts = crisis_texts()
    dup_rate = 1 - len(unique_texts(all_texts)) / len(all_texts)
    enc = load_bundle(BUNDLE).encoder
    real = all_texts[:n]  # the dataset's own order and duplicates
    # the pipeline benchmark's stream: the texts cycled to 20,000 events; a window of it that
    # crosses the wrap-around, so its duplicate share is that of the whole 20,000-event stream
    bench_stream = repeat_to(all_texts, 20_000)
    rep_rate = 1 - len(all_texts) / 20_000
    k = int(n * rep_rate)
    repeated = bench_stream[len(all_texts) - (n - k) : len(all_texts) + k]
    r = interleaved(
        {
            "real, no cache": stream_run(enc, real, 0, 32),
            "real, cache": stream_run(enc, real, args.size, 32),
            "repeated, no cache": stream_run(enc, repeated, 0, 32),
            "repeated, cache": stream_run(enc, repeated, args.size, 32),
        },
        rounds,
        0.0,
    )
    real_gain = r["real, cache"] / r["real, no cache"]
    rep_gain = r["repeated, cache"] / r["repeated, no cache"]
    print(f"cache of {args.size} entries, batches of 32, {n} texts per stream\n")
    print(
        table(
            ["stream", "exact-duplicate share", "cache / no cache", "status"],
            [
                [
                    "CrisisMMD as is (all agreed splits)",
                    f"{dup_rate:.2%}",
                    real_gain,
                    "wins" if real_gain > 1.02 else "no gain",
                ],
                [
                    "texts repeated to 20,000 events",
                    f"{rep_rate:.2%}",
                    rep_gain,
                    met(rep_gain, 1.02),
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
