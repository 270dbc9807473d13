"""The worker: consume, decode, micro-batch, label, deliver and commit, at least once."""

from stream.worker.loop import Worker, WorkerStats

__all__ = ["Worker", "WorkerStats"]
