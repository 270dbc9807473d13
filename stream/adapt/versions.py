"""Adapted bundle versions on disk, and the one link the workers follow.

Layout of the service's directory::

    out/feedback.jsonl     every answer received, in arrival order (the journal)
    out/base/              a private copy of the base bundle, on the versions' file system
    out/versions/0000/     the base bundle as received (hard links to out/base)
    out/versions/0003/     an adapted bundle: new head files, lineage in its manifest
    out/current -> versions/0003

Workers run with ``--bundle out/current``. A version is complete before the link moves (staged
under a hidden name, renamed), and the link is replaced atomically (``rename`` of a new link
over the old), so the hot reloader sees either the old bundle or the new one, never a mix; it
detects the change because the link's target, the bundle's real path, changed. Unchanged files
are hard links to ``out/base``, a copy made once: a base bundle elsewhere may sit on another
file system (an image layer: every version would be a full copy) or be updated in place (which
would change every linked version under the workers). Written files are fsynced before the
rename. Old versions are pruned, keeping the newest ``keep``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from stream.models.manifest import read_manifest, sha256_file, verify_files

__all__ = ["BundleVersions"]


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BundleVersions:
    """The versions under ``root`` and the ``current`` link."""

    def __init__(self, root: Path, keep: int = 5) -> None:
        self.root = Path(root)
        self.versions = self.root / "versions"
        self.link = self.root / "current"
        self.keep = keep

    def seed(self, base: Path) -> Path:
        """``out/base``: a verified copy of ``base``, made again only when ``base``'s files
        differ (a new base bundle; versions already linked to the old copy keep its files)."""
        private = self.root / "base"
        wanted = orjson.loads((base / "manifest.json").read_bytes())
        if (private / "manifest.json").is_file():
            have = orjson.loads((private / "manifest.json").read_bytes())
            if have.get("files") == wanted["files"]:
                return private
        self.root.mkdir(parents=True, exist_ok=True)
        stage = self.root / ".base.partial"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        for name in [*wanted["files"], "manifest.json"]:
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base / name, stage / name)
        verify_files(stage, read_manifest(stage))
        old = self.root / ".base.old"
        shutil.rmtree(old, ignore_errors=True)
        if private.exists():
            private.rename(old)
        stage.rename(private)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(self.root)
        return private

    def current(self) -> Path | None:
        """The directory ``current`` points at, or None before the first version."""
        if not self.link.is_symlink():
            return None
        target = self.link.resolve()
        return target if (target / "manifest.json").is_file() else None

    def _numbers(self) -> list[int]:
        if not self.versions.is_dir():
            return []
        return sorted(int(p.name) for p in self.versions.iterdir() if p.name.isdigit())

    def next_number(self) -> int:
        numbers = self._numbers()
        return numbers[-1] + 1 if numbers else 0

    def publish(
        self,
        source: Path,
        files: Mapping[str, Callable[[Path], None]],
        edit: Callable[[dict[str, Any]], None],
    ) -> Path:
        """A new version: ``source``'s files linked, each of ``files`` written by its
        function (given the path to write), the manifest edited by ``edit`` and re-hashed;
        then ``current`` moved to it. Returns the new version's directory."""
        number = self.next_number()
        self.versions.mkdir(parents=True, exist_ok=True)
        stage = self.versions / f".{number:04d}.partial"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        manifest: dict[str, Any] = orjson.loads((source / "manifest.json").read_bytes())
        for name in manifest["files"]:
            if name not in files:
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(source / name, stage / name)
        for name, write in files.items():
            write(stage / name)
            _fsync_file(stage / name)
            manifest["files"][name] = sha256_file(stage / name)
        edit(manifest)
        (stage / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        _fsync_file(stage / "manifest.json")
        verify_files(stage, read_manifest(stage), only=set(files))
        final = self.versions / f"{number:04d}"
        stage.rename(final)
        _fsync_dir(self.versions)
        self._point(final)
        self._prune()
        return final

    def _point(self, target: Path) -> None:
        tmp = self.root / ".current.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(target, self.root), tmp)
        os.replace(tmp, self.link)
        _fsync_dir(self.root)

    def _prune(self) -> None:
        current = self.current()
        for n in self._numbers()[: -self.keep]:
            path = self.versions / f"{n:04d}"
            if current is None or path.resolve() != current:
                shutil.rmtree(path, ignore_errors=True)
