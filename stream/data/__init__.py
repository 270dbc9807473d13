"""Datasets used at build and evaluation time (never by the worker)."""

from stream.data.crisismmd import CrisisRow, find_dataset, load_split, split_path

__all__ = ["CrisisRow", "find_dataset", "load_split", "split_path"]
