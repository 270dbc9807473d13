"""Datasets used at build and evaluation time (never by the worker)."""

from stream.data.crisismmd import CrisisRow, find_dataset, load_split, split_path
from stream.data.paths import datasets_root

__all__ = ["CrisisRow", "datasets_root", "find_dataset", "load_split", "split_path"]
