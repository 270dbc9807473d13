"""Helpers for the image tests: sample images, hostile images, a bundle with an image side."""

from __future__ import annotations

import atexit
import base64
import io
import shutil
import struct
import tempfile
import zipfile
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from stream.models.bundle import Bundle, load_bundle, read_manifest, sha256_file

from .conftest import BUNDLE, SHARED


@cache
def sample_rgb(name: str = "china.jpg") -> np.ndarray:
    """A real photo shipped by scikit-learn (``china.jpg`` 640x427, ``flower.jpg``)."""
    from sklearn.datasets import load_sample_image

    return np.asarray(load_sample_image(name))


def encode(arr: np.ndarray | Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header_only(width: int, height: int, raw: bytes = b"\0" * 64) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` RGB; IDAT holds ``raw`` compressed."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def png_bomb(side: int) -> bytes:
    """A real, valid grayscale PNG of ``side`` x ``side`` zeros: tiny file, huge when decoded."""
    row = b"\0" + b"\0" * side  # filter byte + pixels
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hello " * 100)
    return buf.getvalue()


def hostile_images() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected ImageError kind)."""
    jpeg = encode(sample_rgb())
    rng = np.random.default_rng(7)
    return {
        "truncated_jpeg": (jpeg[: len(jpeg) // 2], "truncated"),
        "random_bytes": (rng.bytes(4096), "unsupported_format"),
        "zip": (zip_bytes(), "unsupported_format"),
        "png_30000x30000_header": (png_header_only(30000, 30000), "too_many_pixels"),
        "png_bomb_8000": (png_bomb(8000), "too_many_pixels"),
        "empty": (b"", "empty"),
    }


def _build_image_side(src: Path) -> Path:
    """Copy a text-only bundle and add the image side (about 30 s); for test runs where the
    default bundle was built without one."""
    from stream.build.image_assets import build_image_assets

    dst = Path(tempfile.mkdtemp(prefix="crisis-image-bundle-"))
    atexit.register(shutil.rmtree, dst, True)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    text = load_bundle(dst)
    result = build_image_assets(
        dst, text.encoder, text.heads, lambda _msg: None, SHARED if SHARED.is_dir() else None
    )
    manifest = orjson.loads((dst / "manifest.json").read_bytes())
    manifest["image_encoder"] = result["image_encoder"]
    for name in result["written"]:
        manifest["files"][name] = sha256_file(dst / name)
    (dst / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return dst


@cache
def image_bundle_path() -> Path:
    """The default bundle if it has an image side, else a copy with one built (cached)."""
    if not (BUNDLE / "manifest.json").is_file():
        pytest.fail(f"no model bundle at {BUNDLE}: run `make models` first (make test does)")
    if read_manifest(BUNDLE).image_encoder is not None:
        return BUNDLE
    return _build_image_side(BUNDLE)


@cache
def image_bundle() -> Bundle:
    return load_bundle(image_bundle_path())
