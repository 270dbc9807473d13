"""The image path: safe decoding, where image bytes may come from, and the pipeline branch."""

from stream.images.decode import DecodedImage, ImageError, decode_image
from stream.images.fetch import FetchPolicy, fetch_url
from stream.images.source import ImageOptions, load_image_bytes

__all__ = [
    "DecodedImage",
    "FetchPolicy",
    "ImageError",
    "ImageOptions",
    "decode_image",
    "fetch_url",
    "load_image_bytes",
]
