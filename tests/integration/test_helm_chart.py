"""The Helm chart, rendered offline (Helm's Go SDK through helm-python-sdk), linted, and every
manifest validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "helm"
CHART = DEPLOY / "cartstream"
PRODUCTION = yaml.safe_load((DEPLOY / "values-production.yaml").read_text())
KUBERNETES = "1.30.0"
ROLES = {"detect", "reason", "anomalies", "reconcile", "persist"}
CRDS = {
    "ScaledObject": "keda.sh/v1alpha1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="cs", namespace="retail")
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def validate(doc: dict[str, Any]) -> None:
    if doc["kind"] in CRDS:  # no OpenAPI schema offline: check the envelope
        assert doc["apiVersion"] == CRDS[doc["kind"]]
        assert doc["metadata"]["name"] and doc["spec"]
        return
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("values", [{}, PRODUCTION], ids=["defaults", "production"])
def test_chart_lints_renders_and_validates(values: dict[str, Any]) -> None:
    lint = helm.lint(str(CHART), values=values, strict=True)
    assert lint["errors"] == [], lint
    assert not [m for m in lint["messages"] if m["severity"] > 1], lint
    docs = render(values)
    for doc in docs:
        validate(doc)
    deployments = by_kind(docs, "Deployment")
    labels = [d["metadata"]["labels"] for d in deployments.values()]
    components = {label["app.kubernetes.io/component"] for label in labels}
    assert components == ROLES
    (job,) = by_kind(docs, "Job").values()
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert len(by_kind(docs, "PodDisruptionBudget")) == len(ROLES)


def test_production_puts_detect_on_the_gpu_pool_and_scales_on_lag() -> None:
    docs = render(PRODUCTION)
    detect = by_kind(docs, "Deployment")["cs-cartstream-detect"]["spec"]["template"]["spec"]
    container = detect["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].startswith("registry.example.com/retail/cartstream-gpu:")
    assert detect["nodeSelector"] == PRODUCTION["gpu"]["nodeSelector"]
    assert detect["tolerations"] == PRODUCTION["gpu"]["tolerations"]
    scaled = by_kind(docs, "ScaledObject")
    assert set(scaled) == {f"cs-cartstream-{r}" for r in ROLES}
    triggers = scaled["cs-cartstream-reason"]["spec"]["triggers"]
    assert {t["metadata"]["topic"] for t in triggers} == {
        "cart.weights",
        "cart.sessions",
        "cart.detections",
    }
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {"cartstream-prod-reason"}
    assert by_kind(docs, "HorizontalPodAutoscaler") == {}
    for s in scaled.values():  # never more consumers than partitions
        assert s["spec"]["maxReplicaCount"] <= PRODUCTION["topics"]["streamPartitions"]
    # telemetry: OTLP to the collector, and Prometheus scraping every worker's /metrics
    (config,) = by_kind(docs, "ConfigMap").values()
    assert config["data"]["CARTSTREAM_OTEL_EXPORTER"] == "otlp"
    assert config["data"]["CARTSTREAM_OTEL_PROTOCOL"] == "grpc"
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_secrets_are_referenced_never_inlined() -> None:
    docs = render(PRODUCTION)
    (config,) = by_kind(docs, "ConfigMap").values()
    assert not any(
        "PASSWORD" in k or "DATABASE_URL" in k or "MASTER_KEYS" in k for k in config["data"]
    )
    env = by_kind(docs, "Deployment")["cs-cartstream-reason"]["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in env
        if "secretKeyRef" in e.get("valueFrom", {})  # (POD_IP comes from a fieldRef)
    }
    assert refs == {
        "CARTSTREAM_DATABASE_URL": "cartstream-postgres",
        "CARTSTREAM_KAFKA__SASL_USERNAME": "cartstream-kafka-sasl",
        "CARTSTREAM_KAFKA__SASL_PASSWORD": "cartstream-kafka-sasl",
        "CARTSTREAM_CART_AUTH__MASTER_KEYS": "cartstream-cart-keys",
    }
    assert config["data"]["CARTSTREAM_CART_AUTH__MODE"] == "enforce"
    (job,) = by_kind(docs, "Job").values()
    (job_env,) = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert job_env["valueFrom"]["secretKeyRef"]["name"] == "cartstream-postgres-owner"
    defaults = render({})
    (default_job,) = by_kind(defaults, "Job").values()
    (default_env,) = default_job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert default_env["valueFrom"]["secretKeyRef"]["name"] == "cartstream-database"
    assert config["data"]["CARTSTREAM_CART_AUTH__REVOKED_KEY_IDS"] == "[]"


def broken(path: str, value: Any) -> dict[str, Any]:
    values = copy.deepcopy(PRODUCTION)
    node = values
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return values


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("roles.reason.autoscaling.maxReplicas", 512, "topics have 256 partitions"),
        ("kafka.saslSecret.name", "", "set kafka.saslSecret.name"),
        ("brokerProfile", "tansu", "embedded test broker"),
        ("settings.LOG_LEVEL", "debug", "keys are CARTSTREAM_"),
        ("cartAuth.keysSecret.name", "", "set cartAuth.keysSecret.name"),
        ("cartAuth.mode", "strict", "must be off, report or enforce"),
    ],
)
def test_values_that_cannot_work_fail_the_render(path: str, value: Any, message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(broken(path, value))


def test_an_invalid_field_fails_schema_validation() -> None:
    docs = render(broken("webPort", "http-port"))  # renders, but a port must be an integer
    with pytest.raises(kubernetes_validate.ValidationError):
        for doc in docs:
            validate(doc)


def test_the_optional_service_monitor_renders() -> None:
    docs = render(broken("serviceMonitor.enabled", True))
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    validate(monitor)
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_a_model_registry_volume_makes_workers_load_its_promoted_model() -> None:
    docs = render({"detector": {"registryClaim": "models", "version": "det-0123456789ab"}})
    for doc in docs:
        validate(doc)
    (config,) = by_kind(docs, "ConfigMap").values()
    assert config["data"]["CARTSTREAM_DETECT__REGISTRY"] == "/var/lib/cartstream/models"
    assert config["data"]["CARTSTREAM_DETECT__MODEL_VERSION"] == "det-0123456789ab"
    detect = next(d for n, d in by_kind(docs, "Deployment").items() if n.endswith("detect"))
    pod = detect["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model-registry"]
    assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mounts = pod["containers"][0]["volumeMounts"]
    assert {
        "name": "model-registry",
        "mountPath": "/var/lib/cartstream/models",
        "readOnly": True,
    } in mounts
    assert (
        "CARTSTREAM_DETECT__REGISTRY"
        not in by_kind(render({}), "ConfigMap")["cs-cartstream"]["data"]
    )


def test_the_optional_inference_deployment_serves_detect_workers() -> None:
    assert not [n for n in by_kind(render({}), "Deployment") if n.endswith("inference")]
    docs = render({"inference": {"enabled": True, "gpu": True, "maxBatch": 64}})
    for doc in docs:
        validate(doc)
    deployments = by_kind(docs, "Deployment")
    pod = deployments["cs-cartstream-inference"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:2] == ["serve", "detector"] and "--max-batch=64" in container["args"]
    assert container["image"].startswith("ghcr.io/cartstream/cartstream-gpu:")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    service = by_kind(docs, "Service")["cs-cartstream-inference"]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8080, "grpc": 8081}
    detect = deployments["cs-cartstream-detect"]["spec"]["template"]["spec"]["containers"][0]
    assert {
        "name": "CARTSTREAM_DETECT__ENDPOINT",
        "value": "grpc://cs-cartstream-inference:8081",
    } in (detect["env"])
    reason = deployments["cs-cartstream-reason"]["spec"]["template"]["spec"]["containers"][0]
    assert all(e["name"] != "CARTSTREAM_DETECT__ENDPOINT" for e in reason["env"])


def test_the_drift_alert_rule_renders() -> None:
    assert not by_kind(render({}), "PrometheusRule")
    docs = render(
        {"alerts": {"enabled": True, "driftPsi": 0.3, "driftFor": "10m", "visionSurprise": 6}}
    )
    (rule,) = by_kind(docs, "PrometheusRule").values()
    validate(rule)
    alert, vision = rule["spec"]["groups"][0]["rules"]
    assert alert["alert"] == "CartstreamDetectorDrift" and alert["for"] == "10m"
    assert alert["expr"].startswith(
        'max by (scope, feature, store, camera, sku) (cartstream_drift_psi{feature!="contrast"})'
    )
    assert alert["expr"].endswith(">= 0.3")
    assert "{{ $labels.store }}" in alert["annotations"]["summary"]
    assert vision["alert"] == "CartstreamVisionDrift" and vision["for"] == "3m"  # the default
    assert vision["expr"] == "max by (sku) (cartstream_drift_vision_surprise) >= 6"
    assert "{{ $labels.sku }}" in vision["annotations"]["summary"]
    (refused,) = rule["spec"]["groups"][1]["rules"]
    assert refused["alert"] == "CartstreamRecordRefused"
    assert 'cartstream_dead_letters_total{error_type="REFUSED"}' in refused["expr"]


def test_the_optional_console_reaches_the_workers_that_hold_live_baskets() -> None:
    assert not [n for n in by_kind(render({}), "Deployment") if n.endswith("console")]
    docs = render({"console": {"enabled": True, "sessionKeySecret": {"name": "console-key"}}})
    for doc in docs:
        validate(doc)
    deployments = by_kind(docs, "Deployment")
    pod = deployments["cs-cartstream-console"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:1] == ["console"]
    assert "--worker-url=http://cs-cartstream-baskets:6066" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["CARTSTREAM_CONSOLE__SESSION_KEY"]["valueFrom"]["secretKeyRef"]["name"] == (
        "console-key"
    )
    services = by_kind(docs, "Service")
    baskets = services["cs-cartstream-baskets"]["spec"]["selector"]
    assert baskets["app.kubernetes.io/component"] == "reconcile"
    assert "cs-cartstream-console" in services
    for role in ROLES:  # every worker tells the others where to route live basket requests
        worker = deployments[f"cs-cartstream-{role}"]["spec"]["template"]["spec"]
        names = {e["name"]: e for e in worker["containers"][0]["env"]}
        assert names["CARTSTREAM_WEB_ADVERTISED_URL"]["value"] == "http://$(POD_IP):6066"
