"""The adaptation service under faults of the system: a dead-letter topic that refuses, a base
bundle replaced under it, a base updated in place; and the gate's two safety rules."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from stream.adapt.adapter import Adapter
from stream.adapt.answers import Answers, held_back
from stream.adapt.service import AdaptService
from stream.adapt.versions import BundleVersions
from stream.models.bundle import Bundle, load_bundle
from stream.models.manifest import sha256_file
from stream.ops.admin import ensure_topics

from .adapt_data import answer, answers, traffic
from .conftest import BUNDLE, BrokerHandle


def _committed(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        c.close()


@pytest.mark.kafka
def test_a_refusing_dead_letter_topic_holds_the_batch_instead_of_dropping_it(
    noida: BrokerHandle, tmp_path: Path
):
    tag = uuid.uuid4().hex[:8]
    s = noida.settings(
        feedback_topic=f"fb-{tag}",
        dlq_topic=f"missing-dlq-{tag}",
        kafka={
            "allow.auto.create.topics": "false",
            "topic.metadata.propagation.max.ms": "1000",
            "message.timeout.ms": "3000",
        },
    )
    ensure_topics(s.kafka_common(), {s.feedback_topic: 1})
    p = Producer({"bootstrap.servers": noida.bootstrap, "log_level": 3})
    good = answers(3)
    for a in good:
        p.produce(s.feedback_topic, a.model_dump_json().encode())
    p.produce(s.feedback_topic, b"{not json")
    assert p.flush(10) == 0
    service = AdaptService(s, BUNDLE, tmp_path / "out", group=f"adapt-{tag}").start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and service._backoff_s < 1.0:
            service.step(0.5)
        assert service._backoff_s >= 1.0, "the refused dead letter was not noticed"
        assert _committed(noida.bootstrap, f"adapt-{tag}", s.feedback_topic) < 0  # nothing
        assert {a.id for a in good} <= {a.id for a in service.journal.read()}
        ensure_topics(s.kafka_common(), {s.dlq_topic: 1})  # the operator fixes the topic
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            service.step(0.5)
            if _committed(noida.bootstrap, f"adapt-{tag}", s.feedback_topic) == 4:
                break
        assert _committed(noida.bootstrap, f"adapt-{tag}", s.feedback_topic) == 4
        assert len(service.answers) == 3  # re-read answers counted once
    finally:
        service.close()


def _new_base(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose informative head differs (a retrained base bundle)."""
    shutil.copytree(src, dst)
    manifest = orjson.loads((dst / "manifest.json").read_bytes())
    head = next(h for h in manifest["heads"] if h["task"] == "informative")
    with np.load(dst / head["file"]) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["W"] = arrays["W"] * 1.01
    (dst / head["file"]).unlink()
    np.savez(dst / head["file"], **arrays)
    manifest["files"][head["file"]] = sha256_file(dst / head["file"])
    (dst / "manifest.json").write_bytes(orjson.dumps(manifest))
    return dst


@pytest.mark.kafka
def test_a_new_base_bundle_is_served_at_once_and_the_answers_adapt_it(
    noida: BrokerHandle, tmp_path: Path
):
    s = noida.settings(feedback_topic=f"fb-{uuid.uuid4().hex[:8]}")
    ensure_topics(s.kafka_common(), {s.feedback_topic: 1, s.dlq_topic: 1})
    out = tmp_path / "out"
    group = f"a-{uuid.uuid4().hex[:8]}"
    first = AdaptService(s, BUNDLE, out, group=group).start()
    first.journal.append(answers(40))
    first.answers.extend(answers(0))
    first.close()
    new = _new_base(BUNDLE, tmp_path / "base-v2")
    second = AdaptService(s, new, out, group=group).start()
    try:
        current = BundleVersions(out).current()
        assert current is not None
        manifest = orjson.loads((current / "manifest.json").read_bytes())
        assert manifest["adaptation"]["base"]["sha256"] == load_bundle(new).sha256
        assert manifest["adaptation"]["answers_received"] == 0
        published = second.adapt_now()  # the journaled answers, on the new base
        assert published is not None
        assert (
            orjson.loads((published / "manifest.json").read_bytes())["adaptation"][
                "answers_received"
            ]
            == 40
        )
    finally:
        second.close()


def test_a_base_updated_in_place_does_not_change_published_versions(tmp_path: Path):
    base = tmp_path / "base"
    shutil.copytree(BUNDLE, base)
    versions = BundleVersions(tmp_path / "out")
    private = versions.seed(base)
    version = versions.publish(private, {}, lambda m: None)
    manifest = orjson.loads((base / "manifest.json").read_bytes())
    head = manifest["heads"][0]["file"]
    with open(base / head, "r+b") as f:  # cp -r over the base: same inode, new bytes
        f.write(b"\0" * 16)
    load_bundle(version)  # still verifies: it links the private copy, not the base
    assert versions.seed(base) == private  # same listed hashes: not copied again


def test_undo_never_moves_a_trained_answer_into_the_held_back_set():
    a = Answers()
    items = answers(30)
    a.extend(items)
    fitted_before, held_before = a.split("informative")
    undo = answer(items[0].text, None, event_id=items[0].event_id, retracts=items[0].id)
    a.add(undo)
    fitted_after, held_after = a.split("informative")
    assert {x.id for x in held_after} <= {x.id for x in held_before}
    assert {x.id for x in fitted_after} <= {x.id for x in fitted_before}
    twice = answer(items[1].text, items[1].label, event_id=items[1].event_id, annotator="bo")
    assert held_back(twice.text) == held_back(items[1].text)  # same text, same side


def test_the_gate_needs_two_labels_held_back_and_never_goes_below_the_base(bundle: Bundle):
    """Answers that all say "not informative" would let a candidate that says so of every
    event score perfectly on the held-back ones."""
    adapter = Adapter(bundle, min_answers=10)
    a = Answers()
    a.extend(answer(traffic(i), "not_informative") for i in range(40))
    (result,) = adapter.adapt(a)
    assert not result.accepted and "1 label(s)" in result.reason
