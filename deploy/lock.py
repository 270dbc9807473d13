"""Print requirements.lock: the runtime dependencies of pyproject.toml and theirs, pinned at
the versions installed in this environment (``make lock``; extras and build tools left out).

Run it with the project's virtual environment: ``.venv/bin/python deploy/lock.py``.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# Runtime dependencies of crisis-stream (pyproject.toml [project.dependencies]) and theirs,
# pinned at the tested versions: int8 results do not move with a new onnxruntime release.
# Used as constraints (pip install -c requirements.lock ...) by the Dockerfile and `make setup`.
# Regenerate after a dependency change: make lock.
"""


def pinned(requirements: list[str]) -> dict[str, str]:
    """name -> installed version for each requirement and, transitively, its requirements
    (markers evaluated for this interpreter and the requested extras)."""
    seen: dict[str, str] = {}
    todo = [(Requirement(r), "") for r in requirements]
    done: set[tuple[str, str]] = set()
    while todo:
        req, _ = todo.pop()
        name = canonicalize_name(req.name)
        extras = tuple(sorted(req.extras)) or ("",)
        key = (name, ",".join(extras))
        if key in done:
            continue
        done.add(key)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            sys.exit(f"{req.name} is not installed: run `make setup` first")
        seen[name] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append((sub, ""))
    return seen


def main() -> None:
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    pins = pinned(project["dependencies"])
    print(HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())), end="")


if __name__ == "__main__":
    main()
