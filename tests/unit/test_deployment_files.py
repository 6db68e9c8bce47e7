"""The deployment files are valid and agree with the code: docker-compose validates; the
Kubernetes manifests parse, carry the required fields of their kinds and name only settings
the code reads; the KEDA triggers watch the topics and consumer group the workers use; the
Grafana dashboard queries only metrics a worker exposes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.config import HeadwayConfig
from broker.settings import Settings
from broker.topics import Topics
from workers.calls.health import CircuitState
from workers.telemetry.metrics import Metrics
from workers.telemetry.tracing import __doc__ as TRACING_DOC

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
#: the OpenTelemetry variables headway documents (workers/telemetry/tracing.py) besides HEADWAY_*
OTEL_READ = set(re.findall(r"OTEL_[A-Z_]+[A-Z]", TRACING_DOC or ""))


def manifests() -> dict[str, dict[str, Any]]:
    """Every manifest by kind (one of each kind here)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["kind"], path
            assert doc["metadata"]["name"], path
            assert doc["kind"] not in found, f"two {doc['kind']}s"
            found[doc["kind"]] = doc
    return found


def setting_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def test_docker_compose_config_validates() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (.ci/run installs Debian's package)")
        pytest.skip("docker-compose not installed (apt-get install docker-compose)")
    done = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_compose_names_only_settings_the_code_reads() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["worker"]["environment"]
    unknown = {k for k in env if k.startswith("HEADWAY_") and k not in setting_names()}
    assert not unknown
    assert {k for k in env if k.startswith("OTEL_")} <= OTEL_READ
    HeadwayConfig.model_validate(tomllib.loads((ROOT / "deploy/headway.compose.toml").read_text()))


def test_every_manifest_listed_in_the_kustomization_exists() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_the_worker_deployment_has_probes_config_and_a_graceful_stop() -> None:
    kinds = manifests()
    deployment, config = kinds["Deployment"], kinds["ConfigMap"]
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"]
    port = int(config["data"]["HEADWAY_HTTP_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == port
    sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
    assert sources == {kinds["ConfigMap"]["metadata"]["name"], kinds["Secret"]["metadata"]["name"]}
    grace = float(config["data"]["HEADWAY_SHUTDOWN_GRACE_S"])
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_the_manifests_name_only_settings_the_code_reads() -> None:
    kinds = manifests()
    keys = set(kinds["ConfigMap"]["data"]) | set(kinds["Secret"]["stringData"])
    headway = {k for k in keys if k.startswith("HEADWAY_")}
    assert headway <= setting_names(), headway - setting_names()
    assert {k for k in keys if k.startswith("OTEL_")} <= OTEL_READ
    (container,) = kinds["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in container.get("env", ())} <= setting_names()
    config = HeadwayConfig.model_validate(tomllib.loads(kinds["ConfigMap"]["data"]["headway.toml"]))
    assert config.secret_env_names() <= keys  # every key the config names is in the Secret
    mounted = container["volumeMounts"][0]["mountPath"]
    assert kinds["ConfigMap"]["data"]["HEADWAY_CONFIG"] == f"{mounted}/headway.toml"


def test_the_disruption_budget_and_service_select_the_workers() -> None:
    kinds = manifests()
    labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    pdb = kinds["PodDisruptionBudget"]["spec"]
    assert "maxUnavailable" in pdb or "minAvailable" in pdb
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert kinds["Service"]["spec"]["selector"].items() <= labels.items()
    assert kinds["Job"]["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def test_keda_scales_the_workers_on_the_lag_of_every_job_lane() -> None:
    kinds = manifests()
    scaled, config = kinds["ScaledObject"], kinds["ConfigMap"]["data"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    triggers = spec["triggers"]
    assert {t["type"] for t in triggers} == {"kafka"}
    lanes = set(Topics(config["HEADWAY_TOPIC_PREFIX"]).job_lanes)
    assert {t["metadata"]["topic"] for t in triggers} == lanes
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["consumerGroup"] == config["HEADWAY_CONSUMER_GROUP"]
        assert meta["bootstrapServers"] == config["HEADWAY_KAFKA_BOOTSTRAP"]
        assert all(isinstance(v, str) for v in meta.values())  # KEDA metadata is strings
        assert int(meta["lagThreshold"]) > 0


def exposed_metric_names() -> set[str]:
    """Every family a worker's /metrics shows once each kind of event has happened."""
    from prometheus_client.parser import text_string_to_metric_families

    from schemas.results import JobResult, UsageEvent

    metrics = Metrics()
    result = JobResult.model_validate(
        {
            "job_id": "j",
            "tenant": "t",
            "status": "succeeded",
            "route": "r",
            "completed_at": "2026-01-01T00:00:00Z",
            "attempts": 1,
        }
    )
    usage = UsageEvent.model_validate(
        {
            "event_id": "e",
            "tenant": "t",
            "job_id": "j",
            "route": "r",
            "provider": "p",
            "deployment": "p/m",
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": 0.001,
            "timestamp": "2026-01-01T00:00:00Z",
        }
    )
    metrics.job_ended(result, [usage])
    metrics.job_started("normal", 0.1)
    metrics.provider_call("p", "m", "ok", 0.2, retry=True)
    metrics.set_aside("t", "rpm")
    metrics.parked("provider")
    metrics.worker_gauges(
        in_flight=lambda: 1.0,
        buffered=lambda: {"normal": 1.0},
        lag=lambda: {"normal": 1.0},
        circuits=lambda: {"p/m": CircuitState.CLOSED},
        ready=lambda: True,
        spilled=lambda: {"normal": 1.0},
    )
    metrics.budget_gauges(spent=lambda scope: {"t": 1.0}, remaining=lambda scope: {"t": 2.0})
    names = set()
    for family in text_string_to_metric_families(metrics.render().decode()):
        names |= {sample.name for sample in family.samples}
    metrics.close()
    return names


def test_the_grafana_dashboard_queries_only_metrics_a_worker_exposes() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/headway.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bheadway_[a-z_]+", target["expr"])
    }
    exposed = exposed_metric_names()
    assert queried and queried <= exposed, queried - exposed
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} <= uids
