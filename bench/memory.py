"""Worker memory: RSS of a fresh process with the default bundle (text and
image encoders) loaded, after labelling CrisisMMD texts and then text+image events, for int8
and fp32. Goal: <= 600 MB (int8, the default).

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
text_done = rss_mb()
images = 0
if pipe.bundle.image is not None:  # the image encoder too: events with sample photos
    import base64, io
    from PIL import Image
    from sklearn.datasets import load_sample_images
    pics = []
    for arr in load_sample_images().images:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        pics.append(base64.b64encode(buf.getvalue()).decode())
    evs = [InputEvent.model_validate({{"id": f"i{{i}}", "text": texts[i],
           "image": {{"b64": pics[i % len(pics)]}}}}) for i in range({n_img})]
    for s in range(0, len(evs), 16):
        chunk = evs[s : s + 16]
        pipe.label(chunk, [Origin(topic="t", partition=0, offset=s + i) for i in range(len(chunk))])
    images = len(evs)
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(images, base, loaded, text_done, rss_mb(), int(peak) / 1024)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="label 2,000 texts instead of 320")
    args = ap.parse_args()
    n = 2000 if args.full else 320
    rows = []
    for prec in ("int8", "fp32"):
        code = CHILD.format(repo=str(REPO), bench=str(REPO / "bench"), prec=prec, n=n, n_img=n // 4)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
        ).stdout.split()
        images, base, loaded, text_done, after, peak = (float(x) for x in out[-6:])
        status = met(peak, 600, higher=False) if prec == "int8" else "-"
        rows.append(
            [
                prec,
                f"{base:.0f}",
                f"{loaded:.0f}",
                f"{text_done:.0f}",
                f"{after:.0f}",
                f"{peak:.0f}",
                "<= 600" if prec == "int8" else "-",
                status,
            ]
        )
    both = "text and image encoders" if images else "text encoder only (bundle has no image side)"
    print(
        f"worker process memory, MB, {both} loaded: labelled {n} CrisisMMD dev texts in "
        f"batches of 32, then {images:.0f} text+image events (sample photos) in batches of 16"
    )
    print(
        table(
            [
                "encoder",
                "RSS at start",
                "bundle loaded",
                "after texts",
                "after images",
                "peak RSS",
                "goal",
                "status",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
