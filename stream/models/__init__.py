"""Model runtime: bundles (verified manifests), the ONNX text encoder and linear heads."""

from stream.models.bundle import Bundle, HeadSpec, Manifest, load_bundle
from stream.models.heads import HeadOutput, LinearHead
from stream.models.text import TextEncoder, TextEncoding

__all__ = [
    "Bundle",
    "HeadOutput",
    "HeadSpec",
    "LinearHead",
    "Manifest",
    "TextEncoder",
    "TextEncoding",
    "load_bundle",
]
