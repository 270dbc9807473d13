"""The worker observer: one call updates the stats and the Prometheus metrics together."""

from __future__ import annotations

from stream.pipeline import BatchTimings
from stream.worker.observer import WorkerObserver


def _sample(obs: WorkerObserver, name: str, **labels: str) -> float | None:
    return obs.metrics.registry.get_sample_value(name, labels)


def test_image_encoder_time_is_observed():
    obs = WorkerObserver()
    obs.batch(3, BatchTimings(encode_text=0.01, encode_image=0.02, total=0.05))
    obs.batch(2, BatchTimings(encode_text=0.01, encode_image=None, total=0.02))
    assert _sample(obs, "crisis_encoder_seconds_count", modality="image") == 1
    assert _sample(obs, "crisis_encoder_seconds_sum", modality="image") == 0.02
    assert _sample(obs, "crisis_encoder_seconds_count", modality="text") == 2
    assert _sample(obs, "crisis_batch_latency_seconds_count") == 2
    assert obs.stats.batches == 2 and list(obs.stats.batch_sizes) == [3, 2]


def test_each_event_is_counted_once_in_stats_and_metrics():
    obs = WorkerObserver()
    for _ in range(3):
        obs.received()
    obs.labeled({"informative": "informative", "humanitarian": "not_humanitarian"})
    obs.review()
    obs.dead_letter("invalid_json")
    obs.redelivered()
    obs.paused(True)
    obs.paused(False)
    s = obs.stats
    assert (s.received, s.labeled, s.review, s.dead_letters, s.redelivered, s.pauses) == (
        3,
        1,
        1,
        1,
        1,
        1,
    )
    assert _sample(obs, "crisis_events_in_total") == 3
    assert _sample(obs, "crisis_events_labeled_total", task="informative", label="informative") == 1
    assert _sample(obs, "crisis_events_review_total") == 1
    assert _sample(obs, "crisis_events_dlq_total", reason="invalid_json") == 1
    assert _sample(obs, "crisis_outputs_redelivered_total") == 1
    assert _sample(obs, "crisis_input_paused") == 0
