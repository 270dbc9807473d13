"""``crisis-stream explain``: a self-contained HTML page that renders in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from PIL import Image

from stream.cli.evaluation import explain

from .image_utils import b64, encode, hostile_images, image_bundle_path, sample_rgb


def _write_event(tmp_path: Path, event: dict[str, object]) -> Path:
    path = tmp_path / "event.json"
    path.write_bytes(orjson.dumps(event))
    return path


def _run(tmp_path: Path, event: dict[str, object], *args: str) -> str:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(
        explain,
        [str(_write_event(tmp_path, event)), "--out", str(out), "--bundle",
         str(image_bundle_path()), *args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out.read_text(encoding="utf-8")


def _is_self_contained(page: str) -> bool:
    return not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|url\(\s*["']?(https?:|//)""", page)


def test_explains_text_and_image_with_a_heat_map(tmp_path: Path):
    (tmp_path / "photo.jpg").write_bytes(encode(sample_rgb()))
    page = _run(
        tmp_path,
        {"id": "ev-1", "text": "Flood water around the temple <b>now</b>",
         "image": {"path": "photo.jpg"}},
    )  # fmt: skip
    assert page.startswith("<!doctype html>") and _is_self_contained(page)
    assert page.count("data:image/jpeg;base64,") == 1  # inlined once, reused per task
    assert "&lt;b&gt;now&lt;/b&gt;" in page and "<b>now</b>" not in page  # text is escaped
    assert 'class="w pos"' in page or 'class="w neg"' in page  # highlighted words
    assert page.count('class="task"') >= 1
    # A task whose fused image weight is 0 (the build found the image no help there) has no
    # image cells; every task that does draw the image draws all 49 cells of the 7x7 grid.
    maps = page.count('class="img"')
    assert maps >= 1
    assert page.count("<rect ") == 49 * maps
    assert 'viewBox="0 0 640 427"' in page  # boxes in original pixels
    assert "image not used" not in page


def test_image_errors_are_shown_and_text_still_explained(tmp_path: Path):
    data, _ = hostile_images()["truncated_jpeg"]
    page = _run(tmp_path, {"id": "ev-2", "text": "roads flooded", "image": {"b64": b64(data)}})
    assert "image not used: truncated" in page and "<rect " not in page
    assert 'class="w ' in page


def test_image_paths_stay_inside_the_event_directory(tmp_path: Path):
    inner = tmp_path / "events"
    inner.mkdir()
    (tmp_path / "secret.jpg").write_bytes(encode(sample_rgb()))
    page = _run(inner, {"id": "ev-3", "text": "help", "image": {"path": "../secret.jpg"}})
    assert "path_refused" in page and "data:image" not in page


def _chromium() -> str | None:
    return next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )


@pytest.mark.skipif(_chromium() is None, reason="no Chromium: apt-get install -y chromium")
def test_report_renders_in_headless_chromium(tmp_path: Path):
    (tmp_path / "photo.png").write_bytes(encode(sample_rgb("flower.jpg"), "PNG"))
    _run(
        tmp_path,
        {"id": "ev-4", "text": "Volunteers rescue families", "image": {"path": "photo.png"}},
    )
    shot = tmp_path / "shot.png"
    cmd = [
        str(_chromium()),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1000,1400",
        (tmp_path / "report.html").as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert px.shape[:2] == (1400, 1000) and px.std() > 20  # not a blank page
    # the photo (flower: strong reds and greens) was painted, not just the text
    colourful = (px.max(axis=2) - px.min(axis=2)) > 80
    assert colourful.mean() > 0.05
