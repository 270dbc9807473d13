"""Safe image decoding: untrusted bytes in, a fixed-size RGB array (or an ImageError) out.

Images come from an open topic, so decoding is defensive: only JPEG, PNG, WebP and GIF decoders
are allowed; the pixel count is read from the header and checked *before* any pixel is decoded
(decompression bombs); truncated or corrupt files raise instead of decoding half an image. One
image is decoded at a time and reduced to the model input at once, so the peak memory of a
decode is bounded by about ``max_pixels`` x 5 bytes, plus the encoded bytes (``max_bytes``)
and the 224 x 224 x 3 model input. Measured per pixel: RGB PNG 4 bytes, palette PNG/GIF 5,
grayscale 1, progressive JPEG 3, baseline JPEG well under 1 (draft decoding at 1/2-1/8 scale);
images with transparency (8) may have half and WebP (16) a quarter of ``max_pixels``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stream.errors import CrisisStreamError
from stream.settings import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "ImageError",
    "OpenedImage",
    "decode_image",
    "flatten",
    "open_image",
]

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def _cost(fmt: str, img: Image.Image) -> int:
    """How many times fewer pixels than ``max_pixels`` an image may have, so that decoding any
    image stays under about ``max_pixels`` x 5 bytes. Measured: Pillow's WebP decoder holds
    four copies of the frame (16 bytes/pixel); resizing an image with transparency makes a
    premultiplied copy (8 bytes/pixel); other images need 4 bytes/pixel at most."""
    if fmt == "WEBP":
        return 4
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        return 2
    return 1


class ImageError(CrisisStreamError):
    """An image could not be used; ``kind`` is a short reason code for ``image_error``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class DecodedImage:
    """The model input (``pixels``: [size, size, 3] uint8, the whole image stretched) and the
    size of the image as displayed (after EXIF rotation), to map grid cells back to pixels."""

    pixels: np.ndarray
    width: int
    height: int
    format: str


@dataclass(frozen=True)
class OpenedImage:
    """A decoded first frame (RGB, RGBA, L or LA; EXIF-rotated; possibly reduced by JPEG draft
    mode) and the full size of the image as displayed."""

    image: Image.Image
    width: int
    height: int
    format: str


def _read_header(data: bytes, max_bytes: int) -> Image.Image:
    """The image with only its header parsed; refuses oversized, empty or unknown input."""
    if len(data) > max_bytes:
        raise ImageError("too_large", f"{len(data)} bytes exceeds the {max_bytes} byte limit")
    if not data:
        raise ImageError("empty", "no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("unsupported_format", "not a JPEG, PNG, WebP or GIF image") from exc
    except Exception as exc:  # header parsers raise many types on hostile input
        reason = f"unreadable image header: {type(exc).__name__}: {exc}"
        raise ImageError("corrupt", reason) from exc


def _check_pixels(src: Image.Image, fmt: str, max_pixels: int, batch_left: int | None) -> None:
    """Refuses, from the header's size, an image too large to decode (alone or in the batch)."""
    width, height = src.size
    if width <= 0 or height <= 0:
        raise ImageError("corrupt", f"invalid size {width}x{height}")
    limit = max_pixels // _cost(fmt, src)
    if width * height > limit:
        raise ImageError(
            "too_many_pixels",
            f"{width}x{height} = {width * height} pixels exceeds the {limit} pixel limit"
            + (f" for {fmt}" if limit != max_pixels else ""),
        )
    if batch_left is not None and width * height > batch_left:
        raise ImageError(
            "batch_pixel_budget",
            f"{width}x{height} exceeds the {max(batch_left, 0)} pixels left to decode in this "
            "batch (CRISIS_IMAGE_BATCH_MAX_PIXELS)",
        )


def _working_mode(img: Image.Image) -> Image.Image:
    """RGB, RGBA, L or LA: these resize well as they are; other modes are converted."""
    if img.mode in ("RGB", "RGBA", "L", "LA"):
        return img
    has_alpha = img.mode in _ALPHA_MODES or "transparency" in img.info
    return img.convert("RGBA" if has_alpha else "RGB")


def _decode(src: Image.Image, fmt: str, draft: int | None) -> tuple[Image.Image, int]:
    """The decoded, upright first frame and the EXIF orientation it was rotated from."""
    try:
        orientation = src.getexif().get(0x0112, 1)
        if draft and fmt == "JPEG":
            src.draft("RGB", (draft, draft))
        src.load()  # first frame only for GIF/WebP/APNG
        img: Image.Image = src
        if orientation in range(2, 9):  # exif_transpose() would copy even when not rotating
            img = ImageOps.exif_transpose(src) or src
        return _working_mode(img), orientation
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", str(exc)) from exc
    except Exception as exc:  # decoders raise many types on hostile input; none may escape
        kind = "truncated" if "truncated" in str(exc) else "corrupt"
        raise ImageError(kind, f"cannot decode {fmt}: {type(exc).__name__}: {exc}") from exc


def open_image(
    data: bytes,
    max_pixels: int,
    max_bytes: int,
    draft: int | None = None,
    batch_left: int | None = None,
) -> OpenedImage:
    """Open and decode the first frame, refusing oversized or malformed input.

    Pixels are decoded only after the header's size passed the ``max_pixels`` check. With
    ``draft``, a JPEG is decoded directly at the smallest 1/2, 1/4 or 1/8 scale that is still
    at least ``draft`` pixels on each side (much faster, same model input). ``batch_left``:
    the pixels the batch may still decode; a larger image is refused from its header.
    """
    src = _read_header(data, max_bytes)
    fmt = src.format or "unknown"
    _check_pixels(src, fmt, max_pixels, batch_left)
    width, height = src.size
    img, orientation = _decode(src, fmt, draft)
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: displayed size is transposed
        width, height = height, width
    return OpenedImage(img, width, height, fmt)


def flatten(img: Image.Image) -> Image.Image:
    """RGB, with transparency composited over white (what a viewer shows)."""
    if img.mode not in ("RGBA", "LA"):
        return img.convert("RGB")
    img = img.convert("RGBA")
    background = Image.new("RGB", img.size, (255, 255, 255))
    background.paste(img, mask=img.getchannel("A"))
    return background


def decode_image(
    data: bytes,
    size: int = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    batch_left: int | None = None,
) -> DecodedImage:
    """Decode ``data`` into the model input: the whole image resized to ``size`` x ``size``.

    The image is stretched rather than cropped so that every grid cell of the model maps to a
    rectangle of the original image and nothing is cut off.
    """
    opened = open_image(data, max_pixels, max_bytes, draft=size, batch_left=batch_left)
    try:
        small = opened.image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        pixels = np.asarray(flatten(small), dtype=np.uint8)
    except Exception as exc:
        raise ImageError("corrupt", f"cannot resize: {type(exc).__name__}: {exc}") from exc
    return DecodedImage(pixels, opened.width, opened.height, opened.format)
