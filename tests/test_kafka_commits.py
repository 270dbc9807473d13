"""Per-batch commits on a real broker: sent without waiting for the broker's answer, and never
while the one before is unanswered, so a crash re-reads at most two batches."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, TopicPartition

from stream.runtime import make_source
from stream.sources.kafka import KafkaSource

from .conftest import BrokerHandle
from .kafka_utils import create_topics, make_events, seed

pytestmark = pytest.mark.kafka


def _reading(handle: BrokerHandle, partitions: int = 1) -> tuple[KafkaSource, tuple[str, int]]:
    """A source that has joined and read 20 records of a topic; librdkafka's commit timer is
    kept out of the way so that every answer is to our own commits."""
    s = handle.settings(commit_interval_ms=600_000)
    create_topics(s, partitions)
    seed(handle.bootstrap, s.input_topic, make_events(20))
    source = make_source("kafka", s)
    assert isinstance(source, KafkaSource)
    got: list[object] = []
    deadline = time.monotonic() + 30
    while len(got) < 20 and time.monotonic() < deadline:
        got += source.poll(100, 0.2)
    assert len(got) == 20
    return source, (s.input_topic, 0)


def _served(source: KafkaSource) -> None:
    """Poll until the broker's answer to the last commit has been served."""
    deadline = time.monotonic() + 10
    while source.unanswered and time.monotonic() < deadline:
        source.poll(10, 0.1)


def test_a_batch_commit_returns_before_its_answer_and_the_next_waits_while_it_is_out(
    any_broker: BrokerHandle,
):
    source, key = _reading(any_broker)
    try:
        source.store({key: 5})
        source.commit(wait=False)
        assert source.unanswered == {key: 5}  # returned before the broker answered
        source.store({key: 8})
        source.commit(wait=False)  # the first is still unanswered: this one waits
        assert source.unanswered == {}
        assert source.committed([key]) == {key: 8}
        source.store({key: 12})
        source.commit(wait=False)
        assert source.unanswered == {key: 12}
        _served(source)  # a poll serves the answer
        assert source.unanswered == {}
        assert source.committed([key]) == {key: 12}
    finally:
        source.close()


def test_a_failed_commit_stays_unanswered_so_the_next_one_waits(noida: BrokerHandle):
    source, key = _reading(noida)
    try:
        source.store({key: 7})
        source.commit(wait=False)
        _served(source)
        source.store({key: 9})
        source.commit(wait=False)
        # what librdkafka reports when the coordinator did not take the commit
        source._on_commit(KafkaError(KafkaError.REQUEST_TIMED_OUT), [])
        assert source.unanswered == {key: 9}
        # an answer for offsets older than those sent does not answer them either
        source._on_commit(None, [TopicPartition(key[0], key[1], 7)])
        assert source.unanswered == {key: 9}
        source.store({key: 11})
        source.commit(wait=False)  # waits: after it, nothing is unanswered
        assert source.unanswered == {}
        assert source.committed([key]) == {key: 11}
    finally:
        source.close()


def test_a_partition_that_did_not_move_does_not_hold_the_next_commit(noida: BrokerHandle):
    """librdkafka answers a commit for every partition, the ones it did not commit as -1001:
    a partition idle since the last commit must not count as unanswered, or every other batch
    commit would wait."""
    source, (topic, _) = _reading(noida, partitions=2)
    p0, p1 = (topic, 0), (topic, 1)
    try:
        source.store({p0: 3, p1: 2})
        source.commit(wait=False)
        _served(source)
        assert source.unanswered == {}
        source.store({p0: 6})  # p1 idle
        source.commit(wait=False)
        assert source.unanswered == {p0: 6}  # only what moved was sent
        _served(source)
        assert source.unanswered == {}
        assert source.committed([p0, p1]) == {p0: 6, p1: 2}
    finally:
        source.close()


def test_nothing_new_sends_nothing_and_a_nothing_to_commit_answer_answers_nothing(
    noida: BrokerHandle,
):
    """A "nothing to commit" answer may belong to another commit than the one out (librdkafka's
    timer's, or an empty one): taking it as ours would let two commits be out at once."""
    source, key = _reading(noida)
    try:
        source.store({key: 5})
        source.commit(wait=False)
        _served(source)
        source.commit(wait=False)  # nothing stored since: nothing to send
        assert source.unanswered == {}
        source.store({key: 8})
        source.commit(wait=False)
        source._on_commit(KafkaError(KafkaError._NO_OFFSET), [])
        assert source.unanswered == {key: 8}
        _served(source)
        assert source.unanswered == {} and source.committed([key]) == {key: 8}
    finally:
        source.close()
