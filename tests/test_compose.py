"""The deployment files agree with each other, with the code and with the README.

No Docker engine runs here, so these tests read the files: the compose file (and, when the
binary exists, ``docker-compose config -q``), the Dockerfile's instructions, the Prometheus
config (and ``promtool check config`` when it exists), and check every command they run against
the real ``crisis-stream`` CLI.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from stream.cli import cli
from stream.settings import Settings
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
DOCKERFILE = REPO / "Dockerfile"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
KAFKA_IMAGE = re.compile(r"^apache/kafka:\d+\.\d+\.\d+$")


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = _load_module(HEALTHCHECK)


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svc: dict[str, Any] = compose["services"]
    return svc


# --------------------------------------------------------------------------- the CLI


def cli_commands() -> set[str]:
    """Subcommand names as ``crisis-stream --help`` lists them."""
    out = CliRunner().invoke(cli, ["--help"]).output
    listing = out.split("Commands:", 1)[1]
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def check_cli_args(args: list[str]) -> None:
    """``args`` (what follows ``crisis-stream``) name a real (sub)command with valid options."""
    assert args, "empty command"
    assert args[0] in cli_commands(), f"`crisis-stream {args[0]}` is not a command"
    cmd: click.Command = cli
    rest = list(args)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = cmd.get_command(click.Context(cmd), name)
        assert sub is not None, f"no subcommand {name!r} in {args}"
        cmd = sub
    with cmd.make_context("crisis-stream", rest, resilient_parsing=False):
        pass  # raises click.UsageError on an unknown option or a bad value


# --------------------------------------------------------------------------- compose


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_validates() -> None:
    proc = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_kafka_runs_kraft_single_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert KAFKA_IMAGE.match(kafka["image"])
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    listeners = dict(x.split("://") for x in env["KAFKA_LISTENERS"].split(","))
    protocols = dict(x.split(":") for x in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols)
    assert listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]] == ":9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert kafka["hostname"] == "kafka"
    for rf in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
    ):
        assert env[rf] == "1", rf
    # kafka-storage format takes a base64 (URL-safe, unpadded) 16-byte UUID
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    check = " ".join(kafka["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in check
    assert "--bootstrap-server localhost:9092" in check


def topics_created(services: dict[str, Any]) -> dict[str, int]:
    script = "\n".join(services["topics"]["command"])
    created = {}
    for line in script.splitlines():
        if not line.strip():
            continue
        argv = shlex.split(line)
        assert argv[0] == "/opt/kafka/bin/kafka-topics.sh"
        assert {"--create", "--if-not-exists"} <= set(argv)
        assert argv[argv.index("--bootstrap-server") + 1] == "kafka:9092"
        assert argv[argv.index("--replication-factor") + 1] == "1"
        created[argv[argv.index("--topic") + 1]] = int(argv[argv.index("--partitions") + 1])
    return created


def test_topics_service_creates_the_pipeline_topics(services: dict[str, Any]) -> None:
    topics = services["topics"]
    assert topics["image"] == services["kafka"]["image"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics["restart"] == "no"
    assert topics["entrypoint"][:2] == ["/bin/bash", "-ec"]  # stops at the first failure
    created = topics_created(services)
    s = Settings()
    assert set(created) == {
        s.input_topic,
        s.output_topic,
        s.review_topic,
        s.dlq_topic,
        s.feedback_topic,
    }
    assert created[s.input_topic] == 6
    # at most one worker per input partition does useful work
    assert services["worker"]["deploy"]["replicas"] <= created[s.input_topic]


def test_worker_and_aggregator_services(services: dict[str, Any]) -> None:
    worker, agg = services["worker"], services["aggregator"]
    for svc in (worker, agg):
        assert svc["build"]["context"] == "."
        assert (REPO / svc["build"]["context"] / "Dockerfile").is_file()
        assert svc["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert svc["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert svc["environment"]["CRISIS_BOOTSTRAP_SERVERS"] == "kafka:9092"
        check_cli_args(svc["command"])
    assert worker["image"] == agg["image"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["command"] == ["run"]
    assert str(worker["environment"]["CRISIS_METRICS_PORT"]) == "9108"
    assert "CRISIS_GROUP_INSTANCE_ID" not in worker["environment"]  # replicas would fence
    assert "container_name" not in worker and "ports" not in worker  # replicas must not clash
    assert agg["command"][0] == "aggregate"
    port = agg["command"][agg["command"].index("--web-port") + 1]
    assert f"127.0.0.1:{port}:{port}" in agg["ports"]
    # inside the compose network the servers bind every interface: Prometheus scrapes them
    assert worker["environment"]["CRISIS_METRICS_HOST"] == "0.0.0.0"
    assert agg["environment"]["CRISIS_AGG_WEB_BIND"] == "0.0.0.0"
    # no healthcheck override: the image's probes the /healthz of the role it runs
    assert "healthcheck" not in worker and "healthcheck" not in agg
    for svc in (worker, agg):
        env = {k: str(v) for k, v in svc["environment"].items()}
        argv = ["crisis-stream", *svc["command"]]
        assert healthcheck.probe_url(env, argv) == healthcheck.probe_url({}, argv)  # agree
    assert healthcheck.probe_url(worker["environment"], ["crisis-stream", "run"]) == (
        f"http://127.0.0.1:{worker['environment']['CRISIS_METRICS_PORT']}/healthz"
    )
    agg_argv = ["crisis-stream", *agg["command"]]
    assert healthcheck.probe_url(agg["environment"], agg_argv) == (
        f"http://127.0.0.1:{port}/healthz"
    )


def test_every_service_has_cpu_and_memory_limits(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert float(limits["cpus"]) > 0 and limits["memory"], name
    # the worker's match Kubernetes' (deploy/k8s/statefulset.yaml): 2 CPUs, 1.5 GiB
    assert services["worker"]["deploy"]["resources"]["limits"] == {"cpus": "2", "memory": "1536M"}


def test_the_healthcheck_probes_the_role() -> None:
    probe = healthcheck.probe_url
    assert probe({}, ["crisis-stream", "run"]) == "http://127.0.0.1:9108/healthz"
    assert probe({"CRISIS_METRICS_PORT": "9200"}, []) == "http://127.0.0.1:9200/healthz"
    assert probe({}, ["crisis-stream", "aggregate"]) == "http://127.0.0.1:6066/healthz"
    assert probe({"CRISIS_AGG_WEB_PORT": "7000"}, ["x", "aggregate"]).endswith(":7000/healthz")
    assert probe({}, ["x", "aggregate", "--web-port=7001"]).endswith(":7001/healthz")
    assert probe({"CRISIS_ROLE": "aggregate"}, ["tini", "--", "x"]).endswith(":6066/healthz")
    assert probe({"CRISIS_ROLE": "worker"}, ["x", "aggregate"]).endswith(":9108/healthz")
    assert probe({}, ["crisis-stream", "review"]) == "http://127.0.0.1:8091/healthz"
    assert probe({"CRISIS_ROLE": "review"}, ["x", "--port", "9000"]).endswith(":9000/healthz")
    assert probe({}, ["x", "adapt", "--out", "/v/a"]) == "file:///v/a/current/manifest.json"
    with pytest.raises(ValueError, match="--out"):
        probe({"CRISIS_ROLE": "adapt"}, ["x"])
    with pytest.raises(ValueError, match="CRISIS_ROLE"):
        probe({"CRISIS_ROLE": "web"}, [])


def test_workers_serve_the_adaptation_services_current_version(services: dict[str, Any]):
    worker, adapt, review = services["worker"], services["adapt"], services["review"]
    out = adapt["command"][adapt["command"].index("--out") + 1]
    check_cli_args(adapt["command"])
    check_cli_args(review["command"])
    assert worker["environment"]["CRISIS_BUNDLE"] == f"{out}/current"
    assert worker["depends_on"]["adapt"]["condition"] == "service_healthy"
    volume = next(v for v in adapt["volumes"] if v.split(":")[1] == out).split(":")[0]
    assert f"{volume}:{out}:ro" in worker["volumes"]  # workers only read the versions
    assert "replicas" not in adapt.get("deploy", {})  # one service owns the versions
    env = {k: str(v) for k, v in adapt["environment"].items()}
    assert healthcheck.probe_url(env, ["crisis-stream", *adapt["command"]]) == (
        f"file://{out}/current/manifest.json"
    )
    assert review["environment"]["CRISIS_REVIEW_HOST"] == "0.0.0.0"
    assert "127.0.0.1:8091:8091" in review["ports"]


def _published(entry: Any) -> tuple[str | None, str]:
    """(host address or None for every interface, container port) of one ``ports`` entry, in
    the short form (``[HOST:]PUBLISHED:TARGET[/PROTO]``) or the long form (a mapping)."""
    if isinstance(entry, dict):
        return entry.get("host_ip"), str(entry["target"])
    text = str(entry).split("/")[0]
    if text.startswith("["):  # [::1]:29092:29092
        host, _, rest = text[1:].partition("]:")
        return host, rest.rsplit(":", 1)[-1]
    parts = text.split(":")
    return (parts[0] if len(parts) == 3 else None), parts[-1]


def test_every_published_port_binds_loopback(compose: dict[str, Any]):
    """Kafka, the aggregator and Prometheus have no authentication: publishing them on every
    host interface would let anyone on the network produce, delete topics or skip events."""
    published = []
    for name, svc in compose["services"].items():
        for entry in svc.get("ports", []):
            host, target = _published(entry)
            assert host in {"127.0.0.1", "::1"}, f"{name} publishes {entry!r} beyond loopback"
            published.append(target)
        assert "network_mode" not in svc or svc["network_mode"] != "host", name
    assert {"29092", "6066", "9090"} <= set(published)
    header = COMPOSE.read_text().split("services:", 1)[0]
    assert "127.0.0.1" in header and "expose" in header  # how to expose one on purpose


def test_published_port_parsing():
    assert _published("127.0.0.1:29092:29092") == ("127.0.0.1", "29092")
    assert _published("29092:29092") == (None, "29092")
    assert _published("0.0.0.0:9090:9090/tcp") == ("0.0.0.0", "9090")
    assert _published("[::1]:6066:6066") == ("::1", "6066")
    assert _published({"target": 6066, "published": 6066}) == (None, "6066")
    assert _published({"target": 6066, "host_ip": "127.0.0.1"}) == ("127.0.0.1", "6066")
    assert _published(9090) == (None, "9090")


def test_prometheus_scrapes_every_worker_and_the_aggregator(services: dict[str, Any]) -> None:
    prom = services["prometheus"]
    assert prom["image"].startswith("prom/prometheus:")
    host, target = prom["volumes"][0].split(":")[:2]
    assert (REPO / host).resolve() == PROMETHEUS.parent  # the config and the rules it loads
    assert f"--config.file={target}/{PROMETHEUS.name}" in prom["command"]
    jobs = {j["job_name"]: j for j in load(PROMETHEUS)["scrape_configs"]}
    dns = jobs["crisis-worker"]["dns_sd_configs"][0]
    assert dns == {**dns, "names": ["worker"], "type": "A"}
    assert str(dns["port"]) == str(services["worker"]["environment"]["CRISIS_METRICS_PORT"])
    agg_cmd = services["aggregator"]["command"]
    web_port = agg_cmd[agg_cmd.index("--web-port") + 1]
    assert jobs["crisis-aggregate"]["static_configs"][0]["targets"] == [f"aggregator:{web_port}"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_config() -> None:
    proc = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- Dockerfile


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for ins, args in instructions(path):
        if ins == "FROM":
            current = named.setdefault(args.split()[-1], [])
        if current is not None:
            current.append((ins, args))
    return named


def test_dockerfile_stages() -> None:
    ins = instructions(DOCKERFILE)
    args = dict(a.split("=", 1) for i, a in ins if i == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    st = stages(DOCKERFILE)
    assert {"build", "runtime"} <= set(st)
    build_runs = " ".join(a for i, a in st["build"] if i == "RUN")
    runtime_runs = " ".join(a for i, a in st["runtime"] if i == "RUN")
    assert "--index-url" in build_runs and "${TORCH_SPEC}" in build_runs
    assert args.get("TORCH_SPEC") or "torch==" in " ".join(a for _, a in st["build"])
    assert 'pip install -c requirements.lock ".[${BUILD_EXTRAS}]"' in build_runs
    assert "pip install -c /tmp/src/requirements.lock /tmp/src" in runtime_runs  # pinned
    assert "build" in args["BUILD_EXTRAS"].split(",")  # torch-free runtime, build-time extras
    assert '--encoder "${TEXT_ENCODER}"' in build_runs and args["TEXT_ENCODER"] == "e5"
    assert "torch" not in runtime_runs and "[" not in runtime_runs  # no extras at runtime
    # the bundle: built by the torch stage, or given as the `bundle` build context
    assert args["BUNDLE_FROM"] == "build"
    assert ("COPY", "--from=build /models /models") in st["bundle-build"]
    assert ("COPY", "--from=bundle / /models/bundle") in st["bundle-context"]
    assert st["model"][0] == ("FROM", "bundle-${BUNDLE_FROM} AS model")
    assert {"bundle-build", "bundle-context"} == {f"bundle-{v}" for v in ("build", "context")}
    assert ("COPY", "--from=model /models /models") in st["runtime"]
    assert "test -f /models/bundle/manifest.json" in runtime_runs  # an empty context fails
    labels = " ".join(a for i, a in st["runtime"] if i == "LABEL")
    for key in ("title", "description", "source", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    # the bundle the build stage writes is the one the runtime points at
    env = " ".join(a for i, a in st["runtime"] if i == "ENV")
    bundle = re.search(r"CRISIS_BUNDLE=(\S+)", env)
    assert bundle is not None
    assert f"--out {bundle.group(1)} " in build_runs
    assert f"models verify {bundle.group(1)}" in build_runs
    assert re.search(r"CRISIS_METRICS_PORT=9108\b", env)
    # both servers default to loopback; in the container they must be reachable over its network
    assert re.search(r"CRISIS_METRICS_HOST=0\.0\.0\.0\b", env)
    assert re.search(r"CRISIS_AGG_WEB_BIND=0\.0\.0\.0\b", env)


def test_dockerfile_runtime_contract() -> None:
    runtime = stages(DOCKERFILE)["runtime"]
    last = {i: a for i, a in runtime}  # the last of each instruction wins
    assert last["USER"] not in {"root", "0"}
    assert last["ENTRYPOINT"] == '["crisis-stream"]'
    assert last["CMD"] == '["run"]'
    assert last["HEALTHCHECK"].endswith('CMD ["python", "/usr/local/bin/crisis-healthcheck"]')
    assert ("COPY", "deploy/healthcheck.py /usr/local/bin/crisis-healthcheck") in runtime
    assert set(last["EXPOSE"].split()) == {"9108", "6066", "8091"}


def test_dockerfile_commands_are_real() -> None:
    """Every ``crisis-stream ...`` the Dockerfile runs parses against the real CLI."""
    ins = instructions(DOCKERFILE)
    runs = " ; ".join(a for i, a in ins if i == "RUN")
    defaults = dict(a.split("=", 1) for i, a in ins if i == "ARG" and "=" in a)
    used = []
    for part in re.split(r"&&|;|\|\|", runs):
        tokens = shlex.split(part)
        if "crisis-stream" in tokens:
            args = tokens[tokens.index("crisis-stream") + 1 :]
            args = [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], t) for t in args]
            used.append([t for t in args if not t.startswith("$")])  # "$@": --data DIR or none
    assert [u[:2] for u in used] == [["models", "build"], ["models", "verify"]]
    for args in used:
        check_cli_args(args)
    check_cli_args(["models", "build", "--out", "/models/x", "--data", "/data/crisismmd"])
    check_cli_args(["models", "build", "--encoder", "e5", "--out", "/models/x"])  # documented
    runtime = {i: a for i, a in stages(DOCKERFILE)["runtime"]}
    check_cli_args(json.loads(runtime["CMD"]))


def test_dockerignore_is_an_allowlist() -> None:
    lines = [
        x.strip()
        for x in (REPO / ".dockerignore").read_text().splitlines()
        if x.strip() and not x.startswith("#")
    ]
    assert lines[0] == "*"  # nothing but what is re-included: no data, no models, no venv
    assert {"!pyproject.toml", "!README.md", "!stream/"} <= set(lines)
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    for ins, args in instructions(DOCKERFILE):
        if ins == "COPY" and "--from" not in args:
            for src in args.split()[:-1]:  # everything the Dockerfile copies is let in
                assert src.rstrip("/") in allowed, src


# --------------------------------------------------------------------------- README


def test_readme_commands_exist_and_deployment_is_documented() -> None:
    readme = (REPO / "README.md").read_text()
    for sub in set(re.findall(r"crisis-stream ([a-z][a-z-]*)", readme)):
        assert sub in cli_commands(), f"README mentions `crisis-stream {sub}`"
    assert "docker compose up" in readme or "docker-compose up" in readme
    assert "crisis-stream aggregate" in readme
    assert "6066" in readme
