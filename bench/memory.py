"""Worker memory (issue 8, item 5): RSS of a fresh process with the default bundle loaded and
after labelling CrisisMMD batches, for int8 and fp32. Goal: <= 600 MB (int8, the default).

    .venv/bin/python bench/memory.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from common import REPO, met, table

CHILD = """
import sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, {bench!r})
from common import crisis_texts, rss_mb
from stream.pipeline import Pipeline
from stream.runtime import build_pipeline
from stream.schemas import InputEvent, Origin
from stream.settings import Settings
base = rss_mb()
pipe = build_pipeline(Settings(precision={prec!r}, reload_interval_s=0))
loaded = rss_mb()
texts = crisis_texts(["dev"])[:{n}]
evs = [InputEvent(id=str(i), text=t) for i, t in enumerate(texts)]
for s in range(0, len(evs), 32):
    chunk = evs[s : s + 32]
    pipe.label(chunk, [Origin(topic="t", partition=0, offset=s + i) for i in range(len(chunk))])
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(base, loaded, rss_mb(), int(peak) / 1024)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="label 2,000 texts instead of 320")
    args = ap.parse_args()
    n = 2000 if args.full else 320
    rows = []
    for prec in ("int8", "fp32"):
        code = CHILD.format(repo=str(REPO), bench=str(REPO / "bench"), prec=prec, n=n)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout.split()
        base, loaded, after, peak = (float(x) for x in out[-4:])
        status = met(peak, 600, higher=False) if prec == "int8" else "-"
        rows.append(
            [
                prec,
                f"{base:.0f}",
                f"{loaded:.0f}",
                f"{after:.0f}",
                f"{peak:.0f}",
                "<= 600" if prec == "int8" else "-",
                status,
            ]
        )
    print(f"worker process memory, MB (labelled {n} CrisisMMD dev texts in batches of 32)")
    print(
        table(
            [
                "encoder",
                "RSS at start",
                "bundle loaded",
                "after labelling",
                "peak RSS",
                "goal",
                "status",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
