"""The Kubernetes manifests in deploy/k8s, offline: schema-valid for the Kubernetes API
(kubernetes-validate, strict: unknown fields fail), and consistent with the code: every
``CRISIS_*`` variable is a setting, the probes hit paths the health server really serves with
the answers the probes expect, ports, labels and names agree across the files, the image and
the alert rules.
"""

from __future__ import annotations

import re
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.ops.health import HealthServer
from stream.ops.prometheus import WorkerMetrics
from stream.settings import Settings
from tests.conftest import REPO
from tests.test_compose import DOCKERFILE, stages, topics_created

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = REPO / "deploy" / "k8s"
#: the oldest Kubernetes these manifests are written for (unhealthyPodEvictionPolicy: 1.27+)
K8S_VERSIONS = ("1.30", "1.33")
LABELS = {"app.kubernetes.io/name": "crisis-stream", "app.kubernetes.io/component": "worker"}


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def one(name: str, kind: str) -> dict[str, Any]:
    found = [d for d in docs(name) if d["kind"] == kind]
    assert len(found) == 1, f"{name}: {len(found)} {kind}"
    return found[0]


@pytest.fixture(scope="module")
def sts() -> dict[str, Any]:
    return one("statefulset.yaml", "StatefulSet")


@pytest.fixture(scope="module")
def pod(sts: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = sts["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def worker(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod["containers"]
    c: dict[str, Any] = container
    return c


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


# --------------------------------------------------------------------------- schemas


def manifests() -> list[str]:
    return sorted(p.name for p in K8S.glob("*.yaml"))


def test_kustomization_lists_every_core_manifest():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization"
    # everything but itself and the PodMonitor (its CRD may be missing: applied on its own)
    assert sorted(kust["resources"]) == sorted(
        set(manifests()) - {"kustomization.yaml", "podmonitor.yaml"}
    )


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "name", [n for n in manifests() if n not in {"kustomization.yaml", "podmonitor.yaml"}]
)
def test_manifest_is_schema_valid(name: str, version: str):
    for doc in docs(name):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_misspelt_field(sts: dict[str, Any]):
    """Strict validation catches what kubectl would reject (the test above can fail)."""
    import copy

    bad = copy.deepcopy(sts)
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[0], strict=True)


def test_podmonitor_structure(pod: dict[str, Any], sts: dict[str, Any], worker: dict[str, Any]):
    """No schema ships for the Prometheus Operator's CRD: check its shape and what it selects."""
    pm = one("podmonitor.yaml", "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(pm) == {"apiVersion", "kind", "metadata", "spec"}
    assert pm["metadata"]["name"]
    spec = pm["spec"]
    assert set(spec) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
    assert (
        spec["selector"]["matchLabels"].items()
        <= sts["spec"]["template"]["metadata"]["labels"].items()
    )
    (endpoint,) = spec["podMetricsEndpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
    assert endpoint["port"] in {p["name"] for p in worker["ports"]}
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[sm]", endpoint["interval"])
    for r in endpoint["relabelings"]:
        assert set(r) <= {"sourceLabels", "targetLabel", "replacement", "action", "regex"}
    job = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
    # the job the alert rules and the dashboard select
    alerts = (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()
    assert job and f'job="{job[0]["replacement"]}"' in alerts


# --------------------------------------------------------------------------- settings


def crisis_env_names(worker: dict[str, Any]) -> set[str]:
    names = set(env_of(worker))
    names |= set(one("configmap.yaml", "ConfigMap")["data"])
    return {n for n in names if n.startswith("CRISIS_")}


def test_every_variable_is_a_setting(worker: dict[str, Any]):
    names = crisis_env_names(worker)
    assert len(names) > 10
    fields = set(Settings.model_fields)
    unknown = {n for n in names if n.removeprefix("CRISIS_").lower() not in fields}
    assert not unknown, f"not settings (stream/settings.py): {sorted(unknown)}"
    # all of the worker's environment comes from here, the ConfigMap or the Secret
    assert all(n.startswith("CRISIS_") for n in env_of(worker))


def test_the_configmap_parses_as_settings(monkeypatch: pytest.MonkeyPatch, worker: dict[str, Any]):
    for key, value in one("configmap.yaml", "ConfigMap")["data"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CRISIS_METRICS_PORT", env_of(worker)["CRISIS_METRICS_PORT"]["value"])
    s = Settings()
    assert s.security_protocol == "SASL_SSL" and s.sasl_password is None  # never in the map
    assert s.session_timeout_ms > 3 * s.heartbeat_interval_ms
    compose_topics = topics_created(
        yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    )
    assert {s.input_topic, s.output_topic, s.review_topic, s.dlq_topic, s.feedback_topic} == set(
        compose_topics
    )


def test_static_membership_and_threads_per_pod(sts: dict[str, Any], worker: dict[str, Any]):
    env = env_of(worker)
    for name in ("CRISIS_GROUP_INSTANCE_ID", "CRISIS_WORKER_ID"):
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "CRISIS_GROUP_INSTANCE_ID" not in one("configmap.yaml", "ConfigMap")["data"]
    ref = env["CRISIS_THREADS"]["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": worker["name"], "resource": "limits.cpu", "divisor": "1"}
    limits, requests = worker["resources"]["limits"], worker["resources"]["requests"]
    assert limits == requests  # Guaranteed QoS
    assert re.fullmatch(r"[1-9]\d*", str(limits["cpu"]))  # whole CPUs: threads = the limit
    assert re.fullmatch(r"\d+(Mi|Gi)", str(limits["memory"]))
    # at most one worker per input partition does useful work
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert (
        1 <= sts["spec"]["replicas"] <= topics_created(compose["services"])[Settings().input_topic]
    )
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_sasl_secret_is_mounted_as_a_file(pod: dict[str, Any], worker: dict[str, Any]):
    env = env_of(worker)
    assert "CRISIS_SASL_PASSWORD" not in env  # the file, never the value in the environment
    path = Path(env["CRISIS_SASL_PASSWORD_FILE"]["value"])
    mounts = {m["mountPath"]: m for m in worker["volumeMounts"]}
    mount = mounts[str(path.parent)]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret = volume["secret"]
    assert path.name in {i["path"] for i in secret["items"]}
    assert secret["defaultMode"] == 0o440  # readable by the pod's fsGroup, not by others
    user = env["CRISIS_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]
    assert user["name"] == secret["secretName"]


def test_bundle_from_the_image(worker: dict[str, Any]):
    runtime_env = " ".join(a for i, a in stages(DOCKERFILE)["runtime"] if i == "ENV")
    m = re.search(r"CRISIS_BUNDLE=(\S+)", runtime_env)
    assert m is not None
    assert one("configmap.yaml", "ConfigMap")["data"]["CRISIS_BUNDLE"] == m.group(1)
    assert "/models" not in {v["mountPath"] for v in worker["volumeMounts"]}
    assert "# - name: bundles" in (K8S / "statefulset.yaml").read_text()  # the alternative
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert worker["image"] == f"crisis-stream:{version}"
    assert worker["args"] == ["run"]


# --------------------------------------------------------------------------- probes


def test_ports_agree(sts: dict[str, Any], worker: dict[str, Any]):
    port = int(env_of(worker)["CRISIS_METRICS_PORT"]["value"])
    runtime_env = " ".join(a for i, a in stages(DOCKERFILE)["runtime"] if i == "ENV")
    assert f"CRISIS_METRICS_PORT={port}" in runtime_env
    (named,) = [p for p in worker["ports"] if p["name"] == "metrics"]
    assert named["containerPort"] == port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert worker[probe]["httpGet"]["port"] in ("metrics", port)
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    svc = one("service.yaml", "Service")
    assert (
        svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    )
    assert svc["spec"]["publishNotReadyAddresses"] is True  # idle members are scraped too
    (sp,) = svc["spec"]["ports"]
    assert sp["port"] == port and sp["targetPort"] == "metrics"


def test_labels_agree(sts: dict[str, Any]):
    assert sts["spec"]["selector"]["matchLabels"] == LABELS
    assert sts["spec"]["template"]["metadata"]["labels"].items() >= LABELS.items()
    assert one("service.yaml", "Service")["spec"]["selector"] == LABELS
    pdb = one("pdb.yaml", "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == LABELS
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_probes_hit_what_the_health_server_serves(worker: dict[str, Any]):
    """The probe paths, against the real HealthServer: the startup and liveness path is 200
    while the loop turns and 503 once it is stale; the readiness path follows readiness."""
    state = {"ready": False, "beat": time.monotonic()}
    server = HealthServer(
        WorkerMetrics(),
        lambda: (bool(state["ready"]), "test"),
        lambda: float(state["beat"]),
        0,
        "127.0.0.1",
    ).start()
    try:
        live = worker["livenessProbe"]["httpGet"]["path"]
        ready = worker["readinessProbe"]["httpGet"]["path"]
        assert worker["startupProbe"]["httpGet"]["path"] == live
        assert live != ready
        assert _get(server.port, live) == 200
        assert _get(server.port, ready) == 503
        state["ready"] = True
        assert _get(server.port, ready) == 200
        state["beat"] = time.monotonic() - server.stale_after_s - 1
        assert _get(server.port, live) == 503
        assert _get(server.port, "/no-such-path") == 404  # a wrong probe path would not pass
    finally:
        server.stop()


def test_probe_timing(pod: dict[str, Any], worker: dict[str, Any]):
    start, live = worker["startupProbe"], worker["livenessProbe"]
    # the bundle loads (and int8 self-checks) before the endpoints answer: minutes, not seconds
    assert start["periodSeconds"] * start["failureThreshold"] >= 180
    # a stuck loop is restarted within about two minutes after /healthz turns stale (60 s)
    assert 20 <= live["periodSeconds"] * live["failureThreshold"] <= 120
    # SIGTERM drains: the batch in progress, a flush of up to 30 s, the final commit
    assert pod["terminationGracePeriodSeconds"] > 30 + Settings().commit_wait_s
