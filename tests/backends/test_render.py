"""Rendering is pure: spec → manifests, checked offline against the real schemas.

Plain Kubernetes kinds go through ``kubernetes-validate --strict`` (the upstream OpenAPI schemas); Seldon
and KServe custom resources through JSON schemas written from their documented CRD fields.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from wolt_jupyter.backends.render import (
    ClusterContext,
    render,
    render_kserve,
    render_kubernetes,
    render_seldon,
)
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.spec import DeploymentSpec

SCHEMAS = Path(__file__).parent / "schemas"
ARTIFACTS = {
    "main": "s3://models/eta/3/artifacts",
    "challenger": "s3://models/eta/7/artifacts",
    "shadow": "s3://models/eta/8/artifacts",
}


def spec(**changes) -> DeploymentSpec:
    data = {
        "name": "eta-predictor",
        "variants": [
            {"name": "main", "model": "models:/eta/3", "traffic": 90},
            {"name": "challenger", "model": "models:/eta/7", "traffic": 10},
            {"name": "shadow", "model": "models:/eta/8", "shadow": True},
        ],
        "routing": {"sticky_key": "user_id"},
        "replicas": 2,
        **changes,
    }
    return DeploymentSpec.from_dict(data)


CTX = ClusterContext(
    namespace="ml", tracking_uri="http://mlflow.ml:5000", artifacts=ARTIFACTS, pod_monitor=True
)


def kubernetes_validate(manifests: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    exe = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run([str(exe), "--strict", str(path)], capture_output=True, text=True, timeout=60)


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {m["kind"]: m for m in manifests}


def test_kubernetes_manifests_pass_strict_validation(tmp_path: Path) -> None:
    manifests = render_kubernetes(spec(), CTX)
    core = [m for m in manifests if m["kind"] != "PodMonitor"]
    result = kubernetes_validate(core, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # a broken manifest is caught by the same check, so the check can fail
    broken = json.loads(json.dumps(core))
    broken[1]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    assert kubernetes_validate(broken, tmp_path).returncode != 0


def test_kubernetes_manifests_carry_the_spec_probes_and_scraping() -> None:
    kinds = by_kind(render_kubernetes(spec(), CTX))
    assert set(kinds) == {"ConfigMap", "Deployment", "Service", "PodMonitor"}
    assert DeploymentSpec.from_yaml(kinds["ConfigMap"]["data"]["spec.yaml"]) == spec()
    deployment = kinds["Deployment"]
    assert deployment["metadata"]["namespace"] == "ml" and deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.ml:5000"} in container["env"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["PodMonitor"]["spec"]["selector"]["matchLabels"] == selector


def test_a_changed_spec_changes_the_pod_template() -> None:
    before = by_kind(render_kubernetes(spec(), CTX))["Deployment"]["spec"]["template"]
    moved = spec().with_traffic({"main": 50, "challenger": 50})
    after = by_kind(render_kubernetes(moved, CTX))["Deployment"]["spec"]["template"]
    assert before["metadata"]["annotations"] != after["metadata"]["annotations"]
    assert render_kubernetes(spec(), CTX) == render_kubernetes(spec(), CTX)  # pure and deterministic


def test_seldon_deployment_matches_schema_and_spec() -> None:
    [sdep] = render_seldon(spec(), CTX)
    jsonschema.validate(sdep, json.loads((SCHEMAS / "seldondeployment-v1.json").read_text()))
    predictors = {p["name"]: p for p in sdep["spec"]["predictors"]}
    assert sdep["spec"]["protocol"] == "v2"
    assert predictors["main"]["traffic"] == 90 and predictors["challenger"]["traffic"] == 10
    assert predictors["shadow"]["shadow"] is True and "traffic" not in predictors["shadow"]
    assert predictors["challenger"]["graph"]["implementation"] == "MLFLOW_SERVER"
    assert predictors["challenger"]["graph"]["modelUri"] == ARTIFACTS["challenger"]
    assert predictors["main"]["graph"]["logger"] == {"mode": "all"}
    quiet = render_seldon(spec(logging={"responses": False}), CTX)[0]
    assert all("logger" not in p["graph"] for p in quiet["spec"]["predictors"])


def test_seldon_schema_catches_a_wrong_field() -> None:
    [sdep] = render_seldon(spec(), CTX)
    sdep["spec"]["predictors"][0]["graph"]["implementation"] = "MLFLOW"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sdep, json.loads((SCHEMAS / "seldondeployment-v1.json").read_text()))


def test_kserve_canary_two_way_split() -> None:
    two_way = spec(
        variants=[
            {"name": "main", "model": "models:/eta/3", "traffic": 80},
            {"name": "challenger", "model": "models:/eta/7", "traffic": 20},
        ]
    )
    [isvc] = render_kserve(two_way, CTX)
    jsonschema.validate(isvc, json.loads((SCHEMAS / "inferenceservice-v1beta1.json").read_text()))
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["model"]["storageUri"] == ARTIFACTS["challenger"]
    assert (
        predictor["model"]["protocolVersion"] == "v2"
        and predictor["model"]["modelFormat"]["name"] == "mlflow"
    )
    single = spec(variants=[{"name": "main", "model": "models:/eta/3", "traffic": 100}])
    assert "canaryTrafficPercent" not in render_kserve(single, CTX)[0]["spec"]["predictor"]


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        (None, "KServe cannot shadow traffic"),
        (
            [
                {"name": "a", "model": "models:/eta/1", "traffic": 50},
                {"name": "b", "model": "models:/eta/2", "traffic": 25},
                {"name": "c", "model": "models:/eta/3", "traffic": 25},
            ],
            "two ways only",
        ),
    ],
)
def test_kserve_refuses_what_it_cannot_do(variants, message: str) -> None:
    s = spec() if variants is None else spec(variants=variants)
    ctx = ClusterContext(artifacts={v.name: "s3://x" for v in s.variants})
    with pytest.raises(InvalidArgument, match=message):
        render("kserve", s, ctx)


def test_names_are_validated_before_anything_is_sent() -> None:
    with pytest.raises(InvalidArgument, match="namespace 'Prod_NS' is not a DNS-1123 label"):
        render_kubernetes(spec(), ClusterContext(namespace="Prod_NS"))
    with pytest.raises(InvalidArgument, match="no cluster target 'nomad'"):
        render("nomad", spec(), CTX)
