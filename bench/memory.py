"""Worker memory: RSS of a fresh process with the default bundle (text and
image encoders) loaded, after labelling CrisisMMD texts and then text+image events, for int8
and fp32. Goal: <= 400 MB (int8, the default). The sample photos are made in this process, so
that the child imports only what the worker imports (scikit-learn, which ships them, does not
count). A second child loads only the bundle's tokenizer: its share of the total.

    .venv/bin/python bench/memory.py [--out bench/results/FILE.txt]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BUNDLE, REPO, machine, met, table, write_result

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
    import json
    pics = json.load(open({pics!r}))
    evs = [InputEvent.model_validate({{"id": f"i{{i}}", "text": texts[i],
           "image": {{"b64": pics[i % len(pics)]}}}}) for i in range({n_img})]
    for s in range(0, len(evs), 16):
        chunk = evs[s : s + 16]
        pipe.label(chunk, [Origin(topic="t", partition=0, offset=s + i) for i in range(len(chunk))])
    images = len(evs)
peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(images, base, loaded, text_done, rss_mb(), int(peak) / 1024)
"""

TOKENIZER_CHILD = """
import sys
sys.path.insert(0, {bench!r})
from common import rss_mb
from tokenizers import Tokenizer
base = rss_mb()
tok = Tokenizer.from_file({path!r})
print(rss_mb() - base)
"""


def sample_photos(path: Path) -> None:
    """scikit-learn's two sample photos as base64 JPEG, written to ``path`` (JSON list)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    pics = []
    for arr in load_sample_images().images:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        pics.append(base64.b64encode(buf.getvalue()).decode())
    path.write_text(json.dumps(pics))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="label 2,000 texts instead of 320")
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()
    n = 2000 if args.full else 320
    rows = []
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        sample_photos(work / "pics.json")
        for prec in ("int8", "fp32"):
            code = CHILD.format(
                repo=str(REPO),
                bench=str(REPO / "bench"),
                prec=prec,
                n=n,
                n_img=n // 4,
                pics=str(work / "pics.json"),
            )
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
            ).stdout.split()
            images, base, loaded, text_done, after, peak = (float(x) for x in out[-6:])
            status = met(peak, 400, higher=False) if prec == "int8" else "-"
            rows.append(
                [
                    prec,
                    f"{base:.0f}",
                    f"{loaded:.0f}",
                    f"{text_done:.0f}",
                    f"{after:.0f}",
                    f"{peak:.0f}",
                    "<= 400" if prec == "int8" else "-",
                    status,
                ]
            )
    tokenizer = BUNDLE / "tokenizer.json"
    code = TOKENIZER_CHILD.format(bench=str(REPO / "bench"), path=str(tokenizer))
    tok_mb = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()[-1]
    )
    both = "text and image encoders" if images else "text encoder only (bundle has no image side)"
    headers = [
        "encoder",
        "RSS at start",
        "bundle loaded",
        "after texts",
        "after images",
        "peak RSS",
        "goal",
        "status",
    ]
    report = "\n".join(
        [
            machine(),
            f"worker process memory, MB, {both} loaded ({BUNDLE.name}): labelled {n} CrisisMMD "
            f"dev texts in batches of 32, then {images:.0f} text+image events (sample photos) in "
            "batches of 16",
            table(headers, rows),
            "",
            f"the bundle's tokenizer alone ({tokenizer.name}, loaded in a fresh process): "
            f"{tok_mb:.0f} MB",
        ]
    )
    print(report)
    if args.out:
        write_result(args.out, report)


if __name__ == "__main__":
    main()
