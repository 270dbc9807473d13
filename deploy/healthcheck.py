#!/usr/bin/env python3
"""The image's HEALTHCHECK: ``/healthz`` of the role this container runs (stdlib only, cheap).

The role is ``CRISIS_ROLE`` (``run``/``worker`` or ``aggregate``/``aggregator``) when set, else
the container's command line (PID 1, ``crisis-stream aggregate ...`` or ``crisis-stream run``).

- worker: ``http://127.0.0.1:$CRISIS_METRICS_PORT/healthz`` (9108 in the image);
- aggregator: ``http://127.0.0.1:PORT/healthz``, PORT from ``--web-port`` on the command line,
  else ``CRISIS_AGG_WEB_PORT``, else 6066.

Exit 0 when the endpoint answers 200, 1 otherwise (with the reason on stderr).
"""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence

AGGREGATOR = {"aggregate", "aggregator"}
WORKER = {"run", "worker"}


def command_line(pid: int = 1) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def probe_url(env: Mapping[str, str], argv: Sequence[str]) -> str:
    """The ``/healthz`` URL for this container's role."""
    role = env.get("CRISIS_ROLE", "").strip().lower()
    if not role:
        role = "aggregate" if "aggregate" in argv else "run"
    if role in AGGREGATOR:
        port = env.get("CRISIS_AGG_WEB_PORT", "6066")
        for i, arg in enumerate(argv):
            if arg == "--web-port" and i + 1 < len(argv):
                port = argv[i + 1]
            elif arg.startswith("--web-port="):
                port = arg.split("=", 1)[1]
    elif role in WORKER:
        port = env.get("CRISIS_METRICS_PORT", "9108")
    else:
        raise ValueError(f"CRISIS_ROLE={role!r}: expected run or aggregate")
    return f"http://127.0.0.1:{int(port)}/healthz"


def main() -> int:
    try:
        url = probe_url(os.environ, command_line())
        with urllib.request.urlopen(url, timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except Exception as exc:  # any failure is "unhealthy", with the reason for `inspect`
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
