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
from urllib.parse import urlsplit

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


def manifest_list() -> list[dict[str, Any]]:
    """Every manifest, in file order."""
    found: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["kind"], path
            assert doc["metadata"]["name"], path
            found.append(doc)
    named = [(doc["kind"], doc["metadata"]["name"]) for doc in found]
    assert len(named) == len(set(named)), "two manifests of one kind share a name"
    return found


def manifests() -> dict[str, dict[str, Any]]:
    """A manifest of each kind, by kind: the one named ``headway`` (or ``headway-…``, the
    first) where a kind has several — ConfigMap and Secret ``headway``, Job ``headway-migrate``."""
    found: dict[str, dict[str, Any]] = {}
    for doc in manifest_list():
        if doc["kind"] not in found or doc["metadata"]["name"] == "headway":
            found[doc["kind"]] = doc
    return found


def manifest(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in manifest_list() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


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


# -- database roles: the schema's owner migrates, the workers and the pruner have their own ----

GRANTS = ROOT / "deploy" / "postgres" / "audit-grants.sql"
PASSWORDS = ROOT / "deploy" / "postgres" / "role-passwords.sql"
WORKERS_ROLE, PRUNING_ROLE = "headway_worker", "headway_pruner"
#: what a workers' database role may never be: the schema's owner can delete audit records,
#: truncate the trail and switch its trigger off
APPLY_GRANTS = ["-v", "ON_ERROR_STOP=1", "-f", "/grants/audit-grants.sql",
                "-f", "/grants/role-passwords.sql"]  # fmt: skip


def login(url: str) -> str:
    """The role a database URL logs in as."""
    user = urlsplit(url).username
    assert user, url
    return user


def password_variables() -> set[str]:
    """The environment variables role-passwords.sql reads the roles' passwords from."""
    return set(re.findall(r"^\\getenv \w+ (\w+)$", PASSWORDS.read_text(), re.M))


def test_the_grants_file_creates_the_roles_the_deployments_log_in_as() -> None:
    grants = GRANTS.read_text()
    for role in (WORKERS_ROLE, PRUNING_ROLE):
        assert f"CREATE ROLE {role} LOGIN" in grants
        assert re.search(rf"ALTER ROLE {role} PASSWORD :'\w+'", PASSWORDS.read_text())
    assert password_variables() == {"WORKER_DB_PASSWORD", "PRUNER_DB_PASSWORD"}


def test_compose_runs_the_workers_and_the_pruner_as_their_own_roles_never_the_owner() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    owner = services["postgres"]["environment"]["POSTGRES_USER"]
    env = {name: service.get("environment") or {} for name, service in services.items()}
    logins = {
        n: login(e["HEADWAY_DATABASE_URL"]) for n, e in env.items() if "HEADWAY_DATABASE_URL" in e
    }
    assert logins == {"migrate": owner, "worker": WORKERS_ROLE, "prune": PRUNING_ROLE}
    assert {n: e["PGUSER"] for n, e in env.items() if "PGUSER" in e} == {"grants": owner}
    assert owner not in (WORKERS_ROLE, PRUNING_ROLE)

    # migrations, then the grants file as the owner, then the workers and the pruner
    assert "headway db upgrade" in " ".join(services["migrate"]["entrypoint"])
    grants = services["grants"]
    assert grants["command"][0] == "psql" and grants["command"][1:] == APPLY_GRANTS
    assert "./deploy/postgres:/grants:ro" in grants["volumes"]
    assert password_variables() <= set(env["grants"])
    done = "service_completed_successfully"
    assert grants["depends_on"]["migrate"]["condition"] == done
    for name in ("worker", "prune"):
        assert services[name]["depends_on"]["grants"]["condition"] == done
    assert "headway ledger prune" in " ".join(services["prune"]["entrypoint"])
    assert env["worker"]["HEADWAY_PRUNE_S"] == "0"  # the pruner's role deletes, not theirs

    # every password comes from the environment (${VAR:-a laptop's default}), none written in
    for name, values in env.items():
        for key, value in values.items():
            if key in ("HEADWAY_DATABASE_URL", "PGPASSWORD", "POSTGRES_PASSWORD") or key.endswith(
                "_DB_PASSWORD"
            ):
                assert re.search(r"\$\{\w+:-[\w-]+\}", str(value)), (name, key)


def pod_specs() -> dict[tuple[str, str], dict[str, Any]]:
    """Each workload's pod template: Deployments, Jobs and CronJobs."""
    found = {}
    for doc in manifest_list():
        key = (doc["kind"], doc["metadata"]["name"])
        if doc["kind"] in ("Deployment", "Job"):
            found[key] = doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            found[key] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return found


def secrets_of(pod: dict[str, Any]) -> set[str]:
    """The Secrets a pod reads: environment sources, single variables, volumes."""
    names = set()
    for container in [*pod.get("initContainers", ()), *pod["containers"]]:
        for source in container.get("envFrom", ()):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
        for variable in container.get("env", ()):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    names |= {v["secret"]["secretName"] for v in pod.get("volumes", ()) if "secret" in v}
    return names


def test_kubernetes_runs_the_workers_and_the_pruner_as_their_own_roles_never_the_owner() -> None:
    secrets = {
        d["metadata"]["name"]: d["stringData"] for d in manifest_list() if d["kind"] == "Secret"
    }
    pods = pod_specs()
    migrate = pods[("Job", "headway-migrate")]
    [owner] = {secrets[s]["PGUSER"] for s in secrets_of(migrate) if "PGUSER" in secrets[s]}
    assert owner not in (WORKERS_ROLE, PRUNING_ROLE)

    def roles(pod: dict[str, Any]) -> set[str]:
        """The database roles whose logins a pod is given."""
        found = set()
        for data in (secrets[name] for name in secrets_of(pod)):
            if "HEADWAY_DATABASE_URL" in data:
                found.add(login(data["HEADWAY_DATABASE_URL"]))
            if "PGUSER" in data:
                found.add(data["PGUSER"])
        return found

    assert {pod: roles(spec) for pod, spec in pods.items()} == {
        ("Deployment", "headway-worker"): {WORKERS_ROLE},
        ("Job", "headway-migrate"): {owner},  # the only workload holding the owner's login
        ("CronJob", "headway-prune"): {PRUNING_ROLE},
    }

    # the migration, then the grants file — the very file, from a ConfigMap — as the owner
    [upgrade] = migrate["initContainers"]
    assert "headway db upgrade" in " ".join(upgrade["command"])
    [grants] = migrate["containers"]
    assert grants["command"][0] == "psql" and grants["command"][1:] == APPLY_GRANTS
    [mount] = [m for m in grants["volumeMounts"] if m["mountPath"] == "/grants"]
    [volume] = [v for v in migrate["volumes"] if v["name"] == mount["name"]]
    files = manifest("ConfigMap", volume["configMap"]["name"])["data"]
    assert files == {
        "audit-grants.sql": GRANTS.read_text(),
        "role-passwords.sql": PASSWORDS.read_text(),
    }
    assert password_variables() <= {k for s in secrets_of(migrate) for k in secrets[s]}

    # the pruning role prunes on a schedule, one run at a time; the workers never prune
    cron = manifest("CronJob", "headway-prune")["spec"]
    assert cron["schedule"] and cron["concurrencyPolicy"] == "Forbid"
    [prune] = pods[("CronJob", "headway-prune")]["containers"]
    assert prune["args"] == ["ledger", "prune"]
    assert manifest("ConfigMap", "headway")["data"]["HEADWAY_PRUNE_S"] == "0"
