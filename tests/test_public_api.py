"""The public surface: ``__all__`` names exist and the exception tree is rooted."""

from __future__ import annotations

import importlib

import pytest

import stream
from stream import errors

MODULES = [
    "stream",
    "stream.errors",
    "stream.schemas",
    "stream.sources",
    "stream.sinks",
    "stream.models",
    "stream.batcher",
    "stream.tracking",
    "stream.worker",
    "stream.evaluation.metrics",
    "stream.evaluation.intervals",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_resolve(name: str):
    mod = importlib.import_module(name)
    for attr in mod.__all__:
        assert hasattr(mod, attr), f"{name}.{attr} in __all__ but missing"


def test_exception_tree():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.CrisisStreamError)
    assert issubclass(errors.BundleIntegrityError, errors.BundleError)


def test_version():
    assert stream.__version__.count(".") == 2


def test_missing_extra_names_the_extra():
    assert "crisis-stream[local]" in str(errors.MissingExtraError("noida-db", "local"))
