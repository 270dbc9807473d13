"""Where the datasets are found: the environment, then the working directory, then the
checkout."""

from __future__ import annotations

from pathlib import Path

from stream.data import crisismmd, paths


def test_environment_names_the_crisismmd_directory(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(crisismmd.ENV_VAR, str(tmp_path))
    assert crisismmd.find_dataset() == tmp_path
    monkeypatch.setenv(crisismmd.ENV_VAR, str(tmp_path / "missing"))
    assert crisismmd.find_dataset() is None


def test_working_directory_comes_before_the_package(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(crisismmd.ENV_VAR, raising=False)
    root = tmp_path / "shared" / "datasets"
    (root / "crisismmd").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(paths, "_PACKAGE_PARENT", tmp_path / "nowhere")
    assert paths.datasets_root() == root.resolve()
    assert crisismmd.find_dataset() == root.resolve() / "crisismmd"


def test_package_location_is_the_fallback(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(crisismmd.ENV_VAR, raising=False)
    checkout = tmp_path / "repo"
    root = tmp_path / "shared" / "datasets"
    root.mkdir(parents=True)
    checkout.mkdir()
    monkeypatch.chdir(tmp_path)  # ./../shared/datasets does not exist from here
    monkeypatch.setattr(paths, "_PACKAGE_PARENT", checkout)
    assert paths.datasets_root() == root.resolve()
    assert crisismmd.find_dataset() is None  # no crisismmd under it


def test_nothing_found(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(crisismmd.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "_PACKAGE_PARENT", tmp_path / "nowhere")
    assert paths.datasets_root() is None and crisismmd.find_dataset() is None
