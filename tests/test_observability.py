"""The Grafana dashboard and the Prometheus alert rules agree with what the worker exports.

Every metric name in the dashboard's and the rules' PromQL must be one the worker's registry
really produces (or ``up``, which Prometheus adds per target); the rules pass ``promtool check
rules`` and their unit tests (``promtool test rules``); compose mounts both where Prometheus
and Grafana read them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.ops.prometheus import WorkerMetrics
from tests.conftest import REPO

PROM_DIR = REPO / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts.test.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "crisis-stream.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "crisis-stream.yml"
#: series Prometheus itself adds to every scraped target
SCRAPE_SERIES = {"up"}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed"
)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------- PromQL names

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregations, keywords, label names, durations or Grafana variables."""
    text = _STRING.sub('""', expr)
    for pattern in (_MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        before = text[m.start() - 1] if m.start() else " "
        if before.isdigit() or before in ".$":  # 1e3, 5m, $__interval
            continue
        if text[m.end() :].lstrip().startswith("(") or m.group().lower() in _KEYWORDS:
            continue
        names.add(m.group())
    return names


def exported_names() -> set[str]:
    """Every series name a worker's /metrics can carry, from its registry's families (labelled
    families have no samples before their first use, so samples alone would miss them)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    names = set()
    for family in WorkerMetrics().registry.collect():
        names |= {family.name + s for s in suffixes[family.type]}
    return names


def test_metric_names_are_extracted_from_promql():
    expr = (
        'sum by (reason) (rate(crisis_bogus_total{job="x", a="b{c}"}[$__rate_interval]))\n'
        "/ ignoring (reason) group_left sum(rate(crisis_events_in_total[5m] offset 1h))"
        " > 1e3 and on() up == bool 1"
    )
    assert metric_names(expr) == {"crisis_bogus_total", "crisis_events_in_total", "up"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(x_bucket[5m])))") == {
        "x_bucket"
    }


def test_the_registry_names_include_the_process_collector():
    names = exported_names()
    assert {"crisis_events_in_total", "crisis_end_to_end_seconds_bucket"} <= names
    assert {"process_resident_memory_bytes", "process_open_fds"} <= names
    assert "crisis_events_in" not in names  # a counter is exposed with _total only


# --------------------------------------------------------------------------- dashboard


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in doc["panels"]:
        yield p
        yield from p.get("panels", [])


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels(dashboard()) for t in p.get("targets", [])]


def test_dashboard_queries_only_exported_metrics():
    exprs = dashboard_exprs()
    used = set().union(*(metric_names(e) for e in exprs))
    unknown = used - exported_names() - SCRAPE_SERIES
    assert not unknown, f"the dashboard queries metrics no worker exports: {sorted(unknown)}"
    # what an operator looks for first is there
    assert {
        "crisis_events_in_total",  # throughput
        "crisis_consumer_lag",
        "crisis_end_to_end_seconds_bucket",
        "crisis_events_dlq_total",
        "crisis_events_review_total",
        "crisis_events_labeled_total",  # label mix
        "crisis_model_info",
        "crisis_outputs_in_flight",
        "crisis_input_paused",
        "crisis_worker_ready",
        "process_resident_memory_bytes",
    } <= used
    assert all('job="crisis-worker"' in e for e in exprs), "every query selects the workers' job"


def test_dashboard_layout_and_datasource():
    doc = dashboard()
    uid = load(DATASOURCES)["datasources"][0]["uid"]
    ids = [p["id"] for p in panels(doc)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels(doc):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(g["y"] + dy, g["x"] + dx) for dy in range(g["h"]) for dx in range(g["w"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["targets"] and p["datasource"] == {"type": "prometheus", "uid": uid}
            assert all(t["datasource"]["uid"] == uid for t in p["targets"])
    assert doc["uid"] and doc["title"]


# --------------------------------------------------------------------------- alert rules


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load(ALERTS)["groups"] for r in g["rules"] if "alert" in r]


def test_alert_rules_query_only_exported_metrics():
    rules = alert_rules()
    assert {r["alert"] for r in rules} == {
        "CrisisWorkerDown",
        "CrisisWorkersAbsent",
        "CrisisWorkerNotReady",
        "CrisisConsumerLagGrowing",
        "CrisisDeadLettersHigh",
        "CrisisWorkerNoProgress",
    }
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported_names() | SCRAPE_SERIES, (rule["alert"], names)
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])


def test_every_alert_is_unit_tested_firing_and_silent():
    tests = load(ALERTS_TEST)
    assert tests["rule_files"] == [ALERTS.name]
    cases = [c for t in tests["tests"] for c in t["alert_rule_test"]]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never expected to fire"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} never expected silent"


def test_prometheus_loads_the_rules():
    config = load(PROM_DIR / "prometheus.yml")
    assert config["rule_files"] == [ALERTS.name]  # relative to the config: same folder
    jobs = {j["job_name"] for j in config["scrape_configs"]}
    assert "crisis-worker" in jobs  # the job the rules and the dashboard select


@needs_promtool
def test_promtool_checks_the_rules():
    proc = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 rules found" in proc.stdout


@needs_promtool
def test_promtool_rule_unit_tests_pass():
    proc = subprocess.run(
        ["promtool", "test", "rules", ALERTS_TEST.name],
        capture_output=True,
        text=True,
        cwd=PROM_DIR,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@needs_promtool
def test_promtool_rule_unit_tests_catch_a_broken_rule(tmp_path: Path):
    """The rule tests can fail: a DLQ threshold raised past the test's 10 % is caught."""
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    text = ALERTS.read_text()
    assert "> 0.05" in text
    (tmp_path / ALERTS.name).write_text(text.replace("> 0.05", "> 0.2"))
    proc = subprocess.run(
        ["promtool", "test", "rules", ALERTS_TEST.name],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "CrisisDeadLettersHigh" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- compose


def test_compose_runs_grafana_with_the_provisioning():
    services = load(REPO / "docker-compose.yml")["services"]
    grafana = services["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    assert grafana["ports"] and all(p.startswith("127.0.0.1:") for p in grafana["ports"])
    mounts = {}
    for volume in grafana["volumes"]:
        host, target = volume.split(":")[:2]
        mounts[target] = host
    assert (REPO / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA / "provisioning"
    provider = load(PROVIDERS)["providers"][0]
    dash_dir = provider["options"]["path"]
    assert (REPO / mounts[dash_dir]).resolve() == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dash_dir}/{DASHBOARD.name}"
    source = load(DATASOURCES)["datasources"][0]
    prom_port = services["prometheus"]["ports"][0].split(":")[-1]
    assert source["url"] == f"http://prometheus:{prom_port}"
    assert "prometheus" in grafana["depends_on"]
