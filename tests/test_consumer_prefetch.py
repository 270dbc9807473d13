"""The worker's consumer stops fetching while it holds ``prefetch_events`` records.

With librdkafka's own limit (100,000 records) a worker behind on a backlog fetched all of it,
then fetched on at the end of the partition: against noida-db, which answers an empty fetch at
once, that was ~25,000 requests a second and about a core between client and broker, half of a
2-core machine's labelling throughput (bench/idle_consumer.py, docs/brokers.md).
"""

from __future__ import annotations

import json
import time

import pytest

from stream.runtime import consumer_conf
from stream.settings import Settings
from stream.sources import KafkaSource

from .conftest import BrokerHandle
from .kafka_utils import create_topics, make_events, seed


class FetchCount:
    def __init__(self) -> None:
        self.fetches = 0

    def __call__(self, stats_json: str) -> None:
        brokers = json.loads(stats_json)["brokers"].values()
        self.fetches = sum(int(b.get("req", {}).get("Fetch", 0)) for b in brokers)


def _take_slowly(source: KafkaSource, seconds: float) -> None:
    """A record every 50 ms, as a worker busy labelling: ~60 taken, the queue stays over 100."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        source.poll(1, 0.05)
        time.sleep(0.05)


def test_the_prefetch_pair_is_set_and_crisis_kafka_overrides_it():
    conf = consumer_conf(Settings(prefetch_events=300))
    assert conf["queued.min.messages"] == 300 and conf["fetch.queue.backoff.ms"] == 100
    own = Settings(kafka={"queued.min.messages": 5000})
    assert consumer_conf(own)["queued.min.messages"] == "5000"


@pytest.mark.kafka
def test_a_consumer_with_its_backlog_fetched_stops_fetching(noida: BrokerHandle):
    s = noida.settings(prefetch_events=100)
    create_topics(s, input_partitions=1)
    seed(s.bootstrap_servers, s.input_topic, make_events(600))
    count = FetchCount()
    conf = {**consumer_conf(s), "statistics.interval.ms": 200}
    source = KafkaSource(conf, [s.input_topic], stats_cb=count)
    try:
        deadline = time.monotonic() + 30
        while not source.poll(1, 0.1):  # joined, and the backlog is being fetched
            assert time.monotonic() < deadline, "no record within 30 s"
        _take_slowly(source, 0.5)  # past the first fetches
        fetches0, cpu0, t0 = count.fetches, time.process_time(), time.monotonic()
        _take_slowly(source, 2.0)
        wall = time.monotonic() - t0
        rate, cores = (count.fetches - fetches0) / wall, (time.process_time() - cpu0) / wall
    finally:
        source.close()
    # without the limit: ~25,000 fetches/s and ~0.45 cores in this process alone
    assert rate < 20, f"{rate:.0f} fetch requests/s with the backlog already fetched"
    assert cores < 0.2, f"{cores:.2f} cores while holding a fetched backlog"
