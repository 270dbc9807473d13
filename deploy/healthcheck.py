#!/usr/bin/env python3
"""The image's HEALTHCHECK: ``/healthz`` of the role this container runs (stdlib only, cheap).

The role is ``CRISIS_ROLE`` (``run``/``worker``, ``aggregate``/``aggregator``, ``review`` or
``adapt``) when set, else the container's command line (PID 1, ``crisis-stream aggregate ...``,
``crisis-stream review``, ``crisis-stream adapt ...`` or ``crisis-stream run``).

- worker: ``http://127.0.0.1:$CRISIS_METRICS_PORT/healthz`` (9108 in the image);
- aggregator: ``http://127.0.0.1:PORT/healthz``, PORT from ``--web-port`` on the command line,
  else ``CRISIS_AGG_WEB_PORT``, else 6066;
- review page: ``http://127.0.0.1:$CRISIS_REVIEW_PORT/healthz`` (8091);
- adaptation service (no HTTP server): its ``--out`` directory has a ``current`` bundle, the
  version workers load (``file://`` + the manifest's path).

Exit 0 when the endpoint answers 200 (or the file exists), 1 otherwise (the reason on stderr).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence

AGGREGATOR = {"aggregate", "aggregator"}
WORKER = {"run", "worker"}
ROLES = ("aggregate", "review", "adapt")


def command_line(pid: int = 1) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _option(argv: Sequence[str], name: str, default: str) -> str:
    """The value of ``--name VALUE`` or ``--name=VALUE`` on the command line."""
    value = default
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
    return value


def probe_url(env: Mapping[str, str], argv: Sequence[str]) -> str:
    """The ``/healthz`` URL (or, for the adaptation service, the ``file://`` path) for this
    container's role."""
    role = env.get("CRISIS_ROLE", "").strip().lower()
    if not role:
        role = next((r for r in ROLES if r in argv), "run")
    if role in AGGREGATOR:
        port = _option(argv, "--web-port", env.get("CRISIS_AGG_WEB_PORT", "6066"))
    elif role in WORKER:
        port = env.get("CRISIS_METRICS_PORT", "9108")
    elif role == "review":
        port = _option(argv, "--port", env.get("CRISIS_REVIEW_PORT", "8091"))
    elif role == "adapt":
        out = _option(argv, "--out", "")
        if not out:
            raise ValueError("the adapt role needs --out on the command line")
        return f"file://{os.path.abspath(out)}/current/manifest.json"
    else:
        raise ValueError(f"CRISIS_ROLE={role!r}: expected run, aggregate, review or adapt")
    return f"http://127.0.0.1:{int(port)}/healthz"


def main() -> int:
    try:
        url = probe_url(os.environ, command_line())
        if url.startswith("file://"):
            if os.path.isfile(url.removeprefix("file://")):
                return 0
            print(f"unhealthy: no {url.removeprefix('file://')} yet", file=sys.stderr)
            return 1
        with urllib.request.urlopen(url, timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except Exception as exc:  # any failure is "unhealthy", with the reason for `inspect`
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
