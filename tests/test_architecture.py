"""The package's shape: import contracts, a light ``--help``, lazy commands that match their
help, and a configuration reference that matches the settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.cli import COMMANDS
from stream.settings_reference import render_reference

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    """This checkout's ``stream`` first on the path, whatever is installed."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_import_contracts_hold():
    """``lint-imports`` (pyproject's [tool.importlinter]): layers, and a hot path free of
    build, CLI and training imports. Run here because CI runs only the tests."""
    pytest.importorskip("importlinter")
    run = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


_HELP_PROBE = """
import sys
from stream.cli import cli
try:
    cli(["--help"], standalone_mode=False)
except SystemExit:
    pass
heavy = sorted(m for m in ("onnxruntime", "faust", "torch", "transformers", "sklearn")
               if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def test_help_loads_no_model_runtime_faust_or_torch():
    run = subprocess.run(
        [sys.executable, "-c", _HELP_PROBE],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "Commands:" in run.stdout and "evaluate-images" in run.stdout
    assert run.stdout.rstrip().splitlines()[-1] == "HEAVY=", run.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_lazy_command_help_matches_the_command(name: str):
    lazy = COMMANDS[name]
    command = lazy.load()
    assert command.name == name
    assert lazy.short_help == command.get_short_help_str(limit=10**6)


def test_configuration_reference_is_current():
    """Regenerate with ``crisis-stream config --reference > docs/configuration.md``."""
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render_reference(), (
        "docs/configuration.md is stale: run "
        "`crisis-stream config --reference > docs/configuration.md`"
    )


def test_every_setting_is_described():
    from stream.settings import Settings

    missing = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert not missing, f"settings without a description: {missing}"
