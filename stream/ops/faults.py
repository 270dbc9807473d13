"""Test-only crash hook: ``CRISIS_FAULT_CRASH=point:N`` makes the worker SIGKILL itself the Nth
time it passes ``point``.

Random external kills rarely land exactly between two steps of the delivery protocol; the crash
tests use this hook to kill the process *there* (half a batch published; outputs acknowledged
but their offsets not stored) and so prove those windows lose nothing. Unset (production), a
crash point is a single ``None`` check.
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "crash_point"]

#: where the worker calls :func:`crash_point`
POINTS = ("mid_batch", "acked_not_stored", "stored_not_committed")


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, n = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"CRISIS_FAULT_CRASH: unknown point {name!r}; use one of {POINTS}")
    return name, int(n or 1)


_PLAN = _parse(os.environ.get("CRISIS_FAULT_CRASH"))
_seen = 0


def crash_point(name: str) -> None:
    """Die without any cleanup (like a power cut) when the configured point is reached."""
    global _seen
    if _PLAN is None or _PLAN[0] != name:
        return
    _seen += 1
    if _seen >= _PLAN[1]:
        os.kill(os.getpid(), signal.SIGKILL)
