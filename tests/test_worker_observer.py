"""The worker observer: one call updates the stats and the Prometheus metrics together."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from stream.pipeline import BatchTimings
from stream.schemas import Origin
from stream.worker.observer import WorkerObserver, event_time


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


def test_event_time_prefers_the_record_timestamp_then_created_at():
    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    stamped = Origin(topic="in", partition=0, offset=0, timestamp=1_700_000_000_500)
    bare = Origin(topic="in", partition=0, offset=0)
    assert event_time(stamped, created) == 1_700_000_000.5
    assert event_time(bare, created) == created.timestamp()
    assert event_time(bare, created.replace(tzinfo=None)) == created.timestamp()  # naive: UTC
    assert event_time(bare, created.astimezone(timezone(timedelta(hours=2)))) == created.timestamp()
    assert event_time(bare, None) is None


def test_end_to_end_latency_is_never_negative():
    obs = WorkerObserver(wall_clock=lambda: 100.0)
    obs.acknowledged(97.5)
    obs.acknowledged(103.0)  # the producer's clock runs ahead of this worker's
    assert _sample(obs, "crisis_end_to_end_seconds_count") == 2
    assert _sample(obs, "crisis_end_to_end_seconds_sum") == 2.5
    assert _sample(obs, "crisis_end_to_end_seconds_bucket", le="0.05") == 1
