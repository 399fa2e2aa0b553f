"""Rendering is pure: spec → manifests, checked offline as the cluster would check them.

Core kinds go through ``kubernetes-validate --strict`` (the upstream OpenAPI schemas). Custom resources go
through the JSON schemas the package ships, derived from the operators' published CRDs (each file names its
release and path), and through the operators' admission rules (``backends/admission.py``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from wolt_jupyter.backends import admission
from wolt_jupyter.backends.render import (
    ClusterContext,
    render_kserve,
    render_kubernetes,
    render_seldon,
)
from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.spec import DeploymentSpec

from helpers import strict_errors

ARTIFACTS = {
    "main": "s3://models/eta/3/artifacts",
    "challenger": "s3://models/eta/7/artifacts",
    "canary": "s3://models/eta/9/artifacts",
    "shadow": "s3://models/eta/8/artifacts",
    "shadow-2": "s3://models/eta/10/artifacts",
}
CTX = ClusterContext(
    namespace="ml",
    tracking_uri="http://mlflow.ml:5000",
    artifacts=ARTIFACTS,
    pod_monitor=True,
    request_logger_url="http://logger.ml/",
    service_account="models-reader",
)
RENDERERS = {"kubernetes": render_kubernetes, "seldon": render_seldon, "kserve": render_kserve}
MAIN = {"name": "main", "model": "models:/eta/3", "traffic": 100}
SPECS = {
    "single": {"variants": [MAIN]},
    "ab": {
        "variants": [{**MAIN, "traffic": 80}, {"name": "challenger", "model": "models:/eta/7", "traffic": 20}]
    },
    "ab+shadow": {
        "variants": [
            {**MAIN, "traffic": 90},
            {"name": "challenger", "model": "models:/eta/7", "traffic": 10},
            {"name": "shadow", "model": "models:/eta/8", "shadow": True},
        ]
    },
    "sticky": {
        "variants": [
            {**MAIN, "traffic": 50},
            {"name": "challenger", "model": "models:/eta/7", "traffic": 50},
        ],
        "routing": {"sticky_key": "user_id"},
    },
    "canary": {
        "variants": [{**MAIN, "traffic": 95}, {"name": "canary", "model": "models:/eta/9", "traffic": 5}]
    },
}
# what a target cannot honour, refused with one line naming the target that can
REFUSED = {
    ("kserve", "ab+shadow"): "KServe cannot shadow traffic (variant 'shadow'): it has no mirror of requests; "
    "drop --shadow, or deploy with --target seldon or --target kubernetes",
    ("seldon", "sticky"): "Seldon Core splits traffic at random per request and cannot keep a 'user_id' on "
    "one variant: drop --sticky-key, or deploy with --target kubernetes (the project's router honours it)",
    ("kserve", "sticky"): "KServe splits traffic at random per request and cannot keep a 'user_id' on one "
    "variant: drop --sticky-key, or deploy with --target kubernetes (the project's router honours it)",
}


def spec(shape: str = "ab+shadow", **changes) -> DeploymentSpec:
    return DeploymentSpec.from_dict({"name": "eta-predictor", "replicas": 2, **SPECS[shape], **changes})


def by_kind(manifests: list[dict]) -> dict[str, dict]:
    return {m["kind"]: m for m in manifests}


@pytest.mark.parametrize("shape", list(SPECS))
@pytest.mark.parametrize("target", list(RENDERERS))
def test_every_shape_validates_against_the_published_schemas_or_is_refused(target: str, shape: str) -> None:
    refusal = REFUSED.get((target, shape))
    if refusal is not None:
        with pytest.raises(InvalidArgument) as err:
            RENDERERS[target](spec(shape), CTX)
        assert str(err.value) == refusal
        return
    manifests = RENDERERS[target](spec(shape), CTX)
    for manifest in manifests:
        key = (manifest["apiVersion"], manifest["kind"])
        if key in admission.SCHEMAS:  # the published CRD, independently of the package's own check
            jsonschema.validate(manifest, admission.schema(*key), cls=jsonschema.Draft202012Validator)
        else:
            assert strict_errors(manifest) is None
    checked = admission.admit(manifests)
    assert len(checked) == sum(
        m["kind"] in ("SeldonDeployment", "InferenceService") for m in manifests
    ) * 2 + (
        target == "kubernetes"  # the PodMonitor's schema
    )


def test_schema_files_name_their_source() -> None:
    for (api_version, _kind), filename in admission.SCHEMAS.items():
        doc = json.loads((admission.SCHEMA_DIR / filename).read_text())
        src = doc["x-source"]
        assert src["repository"].startswith("https://github.com/") and src["release"].startswith("v")
        assert src["path"].endswith(".yaml") and api_version.endswith("/" + src["version"])
        assert src["release"] in doc["$comment"] and src["path"] in doc["$comment"]
    assert admission.source("machinelearning.seldon.io/v1", "SeldonDeployment") == "Seldon Core v1.18.2"
    assert admission.source("serving.kserve.io/v1beta1", "InferenceService") == "KServe v0.20.0"


def test_schemas_ship_inside_the_package() -> None:
    import wolt_jupyter

    assert admission.SCHEMA_DIR.parent == Path(wolt_jupyter.__file__).parent / "backends"
    assert {p.name for p in admission.SCHEMA_DIR.glob("*.json")} == set(admission.SCHEMAS.values())


def test_published_schemas_accept_official_fields_and_refuse_unknown_ones() -> None:
    [sdep] = render_seldon(spec(), CTX)
    shadow = next(p for p in sdep["spec"]["predictors"] if p.get("shadow"))
    shadow["traffic"] = 0  # documented on a shadow predictor
    sdep["spec"]["predictors"][0]["componentSpecs"][0]["hpaSpec"] = {"maxReplicas": 3}
    admission.admit([sdep])
    sdep["spec"]["predictors"][0]["graph"]["implementaton"] = "MLFLOW_SERVER"
    with pytest.raises(InvalidArgument) as err:
        admission.admit([sdep])
    assert str(err.value) == (
        "SeldonDeployment eta-predictor does not match the Seldon Core v1.18.2 CRD at spec.predictors[0].graph: "
        "Additional properties are not allowed ('implementaton' was unexpected)"
    )
    [isvc] = render_kserve(spec("canary"), CTX)
    isvc["spec"]["canary"] = []  # KServe 0.20's official (Standard mode) canary list
    admission.admit([isvc])
    isvc["spec"]["predictor"]["model"]["resources"]["requests"]["cpu"] = "half"
    with pytest.raises(
        InvalidArgument, match=r"at spec.predictor.model.resources.requests.cpu: 'half' has the"
    ):
        admission.admit([isvc])


def test_kubernetes_validate_catches_a_broken_core_manifest() -> None:
    deployment = by_kind(render_kubernetes(spec(), CTX))["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    assert "containerPort" in strict_errors(deployment)


def test_kubernetes_manifests_carry_the_spec_probes_ports_and_scraping() -> None:
    kinds = by_kind(render_kubernetes(spec("sticky"), CTX))
    # the context names the pods' account: no ServiceAccount of ours, only the right to read the spec
    assert set(kinds) == {"Role", "RoleBinding", "ConfigMap", "Deployment", "Service", "PodMonitor"}
    assert DeploymentSpec.from_yaml(kinds["ConfigMap"]["data"]["spec.yaml"]) == spec("sticky")
    assert kinds["Role"]["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                       "resourceNames": [kinds["ConfigMap"]["metadata"]["name"]],
                                       "verbs": ["get", "list", "watch"]}]  # fmt: skip
    assert kinds["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "models-reader", "namespace": "ml"}]
    deployment = kinds["Deployment"]
    assert deployment["metadata"]["namespace"] == "ml" and deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert pod["spec"]["serviceAccountName"] == "models-reader"
    args = container["args"]
    assert args[args.index("--grpc-port") + 1] == "8081"
    # a replaced pod leaves the endpoints during the preStop pause, then drains its connections at SIGTERM
    assert args[args.index("--drain-seconds") + 1] == "5"
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert deployment["spec"]["progressDeadlineSeconds"] == 300
    assert [p["name"] for p in kinds["Service"]["spec"]["ports"]] == ["http", "grpc"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.ml:5000"} in container["env"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert kinds["Service"]["spec"]["selector"] == selector
    assert kinds["PodMonitor"]["spec"]["selector"]["matchLabels"] == selector


def test_a_routing_change_keeps_the_pods_and_a_model_change_rolls_them() -> None:
    from dataclasses import replace

    def rendered(s: DeploymentSpec, revision: int) -> dict:
        return by_kind(render_kubernetes(s, replace(CTX, revision=revision)))

    before = rendered(spec(), 1)
    moved = rendered(spec().with_traffic({"main": 50, "challenger": 50}), 2)
    # weights (and the revision the rows name) change the ConfigMap the pods watch, not the pod template
    assert moved["Deployment"] == before["Deployment"]
    assert moved["ConfigMap"]["data"] != before["ConfigMap"]["data"] and moved["ConfigMap"]["data"]["revision"] == "2"
    new_model = replace(spec(), variants=tuple(replace(v, model="models:/eta/9") if v.name == "challenger" else v
                                               for v in spec().variants))  # fmt: skip
    rolled = rendered(new_model, 3)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert rolled != before["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert render_kubernetes(spec(), CTX) == render_kubernetes(spec(), CTX)  # pure and deterministic
    # a variant's timeout is re-read by the pods with the routing: the ConfigMap carries it, the pods stay
    timed = replace(spec(), variants=tuple(replace(v, timeout=0.5) for v in spec().variants))
    kept = rendered(timed, 1)
    assert kept["Deployment"] == before["Deployment"]
    pods_spec = DeploymentSpec.from_yaml(kept["ConfigMap"]["data"]["spec.yaml"])
    assert pods_spec.variant("challenger").timeout == 0.5


def test_seldon_predictors_logger_and_resources() -> None:
    s = spec(resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}})
    [sdep] = render_seldon(s, CTX)
    predictors = {p["name"]: p for p in sdep["spec"]["predictors"]}
    assert sdep["spec"]["protocol"] == "v2"
    assert predictors["main"]["traffic"] == 90 and predictors["challenger"]["traffic"] == 10
    assert predictors["shadow"]["shadow"] is True and "traffic" not in predictors["shadow"]
    graph = predictors["challenger"]["graph"]
    assert graph["implementation"] == "MLFLOW_SERVER" and graph["modelUri"] == ARTIFACTS["challenger"]
    assert graph["logger"] == {"mode": "all", "url": "http://logger.ml/"}
    assert graph["serviceAccountName"] == "models-reader"
    container = predictors["main"]["componentSpecs"][0]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }
    quiet = render_seldon(spec(logging={"responses": False}), CTX)[0]
    assert all("logger" not in p["graph"] for p in quiet["spec"]["predictors"])


def test_kserve_canary_and_request_logger() -> None:
    [isvc] = render_kserve(spec("ab"), CTX)
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    assert predictor["model"]["storageUri"] == ARTIFACTS["challenger"]
    assert (
        predictor["model"]["protocolVersion"] == "v2"
        and predictor["model"]["modelFormat"]["name"] == "mlflow"
    )
    assert predictor["logger"] == {"mode": "all", "url": "http://logger.ml/"}
    single = render_kserve(spec("single", logging={"responses": False}), CTX)[0]["spec"]["predictor"]
    assert "canaryTrafficPercent" not in single and "logger" not in single


two_shadows = [
    *SPECS["ab+shadow"]["variants"],
    {"name": "shadow-2", "model": "models:/eta/10", "shadow": True},
]
three_way = [
    {"name": "a", "model": "models:/eta/1", "traffic": 50},
    {"name": "b", "model": "models:/eta/2", "traffic": 25},
    {"name": "c", "model": "models:/eta/3", "traffic": 25},
]


@pytest.mark.parametrize(
    ("target", "changes", "message"),
    [
        (
            "seldon",
            {"variants": two_shadows},
            "Seldon Core allows one shadow predictor, got 2 (shadow, shadow-2): keep one --shadow, or deploy "
            "with --target kubernetes (the project's router mirrors to any number)",
        ),
        (
            "seldon",
            {"logging": {"sample": 0.25}},
            "Seldon Core's request logger logs every request and cannot sample 0.25 of them: set logging.sample "
            "to 1, or deploy with --target kubernetes (the project's router samples)",
        ),
        (
            "kserve",
            {"variants": SPECS["ab"]["variants"], "logging": {"sample": 0.5}},
            "KServe's request logger logs every request and cannot sample 0.5 of them: set logging.sample to 1, "
            "or deploy with --target kubernetes (the project's router samples)",
        ),
        (
            "kserve",
            {"logging": {"probabilities": True}},
            "KServe's request logger logs only what the model answers and cannot add its class probabilities: "
            "drop logging.probabilities, or deploy with --target kubernetes (the project's router logs them)",
        ),
        (
            "seldon",
            {"logging": {"on_full": "refuse"}},
            "Seldon Core's request logger sends records after the answer and cannot refuse a request whose "
            "record it cannot keep: drop logging.on_full, or deploy with --target kubernetes (the project's "
            "router refuses them)",
        ),
        (
            "seldon",
            {"variants": [{**v, "timeout": 0.5} for v in SPECS["ab+shadow"]["variants"]]},
            "Seldon Core has no per-variant timeout that sends a timed-out challenger's request to the "
            "champion (variant 'main' has timeout 0.5): drop variants[].timeout, or deploy with --target "
            "kubernetes (the project's router honours it)",
        ),
        (
            "kserve",
            {"variants": [MAIN, {"name": "b", "model": "models:/eta/4", "traffic": 0, "timeout": 2}]},
            "KServe has no per-variant timeout that sends a timed-out challenger's request to the champion "
            "(variant 'b' has timeout 2): drop variants[].timeout, or deploy with --target kubernetes (the "
            "project's router honours it)",
        ),
        (
            "kserve",
            {"variants": three_way},
            "KServe splits traffic two ways only (previous and latest revision), got 3 live variants; use "
            "--target seldon or --target kubernetes for an A/B/n split",
        ),
        (
            "kserve",
            {"name": "7eta", "variants": [MAIN]},
            "KServe would refuse InferenceService 7eta: its name must start with a letter and be lowercase "
            "letters, digits and '-' ([a-z]([-a-z0-9]*[a-z0-9])?); rename it, e.g. 'm-7eta'",
        ),
        (
            "kubernetes",
            {"name": "e" * 60},
            f"deployment name {'e' * 60!r} is too long for the kubernetes target: at most 58 characters (its "
            "ConfigMap is named NAME-spec)",
        ),
    ],
)
def test_what_a_target_cannot_honour_is_refused(target: str, changes: dict, message: str) -> None:
    s = DeploymentSpec.from_dict({**{"name": "eta-predictor", **SPECS["ab+shadow"]}, **changes})
    with pytest.raises(InvalidArgument) as err:
        admission.admit(RENDERERS[target](s, CTX))
    assert str(err.value) == message


def test_kubernetes_target_honours_what_the_operators_cannot() -> None:
    s = DeploymentSpec.from_dict(
        {
            "name": "eta",
            "variants": two_shadows,
            "routing": {"sticky_key": "user_id"},
            "logging": {"sample": 0.1},
        }
    )
    manifests = render_kubernetes(s, CTX)
    assert DeploymentSpec.from_yaml(by_kind(manifests)["ConfigMap"]["data"]["spec.yaml"]) == s


def _sdep() -> dict:
    return render_seldon(spec(), CTX)[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda m: m["spec"]["predictors"][1].update(name="main"),
            "predictor names must be unique, got main, main, shadow",
        ),
        (
            lambda m: m["spec"]["predictors"][1].update(shadow=True, traffic=0),
            "multiple shadows are not allowed (challenger, shadow)",
        ),
        (
            lambda m: m["spec"]["predictors"][1].update(traffic=20),
            "live predictors' traffic must sum to 100, got 110",
        ),
        (
            lambda m: m["spec"].update(predictors=m["spec"]["predictors"][2:]),
            "a shadow cannot be the only predictor",
        ),
        (
            lambda m: m["spec"].update(protocol="v3"),
            "protocol 'v3' is not one of seldon, tensorflow, kfserving, v2",
        ),
        (
            lambda m: m["spec"]["predictors"][0]["graph"].update(logger={}),
            "predictor main: graph.logger has no mode",
        ),
        (
            lambda m: m["spec"]["predictors"][0]["graph"].update(modelUri=""),
            "predictor main: a prepackaged server needs graph.modelUri",
        ),
    ],
)
def test_seldon_admission_rules(change, message: str) -> None:
    manifest = _sdep()
    change(manifest)
    with pytest.raises(InvalidArgument) as err:
        admission.admit([manifest])
    assert str(err.value) == f"Seldon Core would refuse SeldonDeployment eta-predictor: {message}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p.update(sklearn={"storageUri": "s3://x"}),
            "the predictor needs exactly one implementation, got sklearn, model",
        ),
        (lambda p: p["model"].update(name="m"), "the 'name' field is not allowed in a standard predictor"),
        (lambda p: p.update(canaryTrafficPercent=120), "canaryTrafficPercent must be 0-100, got 120"),
        (lambda p: p.update(minReplicas=-1), "minReplicas must not be negative"),
    ],
)
def test_kserve_admission_rules(change, message: str) -> None:
    [isvc] = render_kserve(spec("ab"), CTX)
    change(isvc["spec"]["predictor"])
    with pytest.raises(InvalidArgument) as err:
        admission.admit([copy.deepcopy(isvc)])
    assert str(err.value) == f"KServe would refuse InferenceService eta-predictor: {message}"


def test_names_are_validated_before_anything_is_sent() -> None:
    with pytest.raises(InvalidArgument, match="namespace 'Prod_NS' is not a DNS-1123 label"):
        render_kubernetes(spec(), ClusterContext(namespace="Prod_NS"))
    with pytest.raises(InvalidArgument, match="service account 'Bad_SA' is not a DNS-1123 label"):
        render_seldon(spec(), ClusterContext(artifacts=ARTIFACTS, service_account="Bad_SA"))


@pytest.mark.parametrize(
    ("store", "logs", "problem"),
    [
        ("postgresql://wolt:pw@postgres.ml:5432/wolt", True, None),
        (None, True, "is a file on this machine"),
        ("postgresql://wolt:pw@localhost:5432/wolt", True, "this machine's loopback"),
        ("postgresql://wolt:pw@[::1]:5432/wolt", True, "this machine's loopback"),
        ("postgresql://wolt@/wolt?host=/run/postgresql", True, "a Unix socket of this machine"),
        ("sqlite:////srv/log.db", True, "cluster targets log to PostgreSQL"),
        (None, False, None),  # nothing logged, nothing to share
    ],
)
def test_the_response_store_pods_share_is_checked_in_one_line(store, logs, problem) -> None:
    from wolt_jupyter.backends.render import response_store_problem

    spec = DeploymentSpec.from_dict(
        {"name": "eta", "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100}],
         "logging": {"responses": logs}}
    )  # fmt: skip
    line = response_store_problem(spec, ClusterContext(response_store_url=store), "sqlite:////home/u/eta.db")
    if problem is None:
        assert line is None
        manifests = render_kubernetes(spec, ClusterContext(response_store_url=store))
        assert manifests[0]["kind"] == ("Secret" if logs else "ServiceAccount")
    else:
        assert problem in line and "\n" not in line and ":pw@" not in line
        assert "RESPONSE_STORE_URL" in line  # names the fix


def test_the_cluster_store_defaults_to_the_notebook_store_when_a_server(monkeypatch, wolt_home) -> None:
    from wolt_jupyter.config import settings

    s = settings()
    assert s.cluster_response_store("postgresql://u:p@db.ml/wolt") == "postgresql://u:p@db.ml/wolt"
    assert s.cluster_response_store("sqlite:////tmp/x.db") is None
    assert s.cluster_response_store("postgresql://u@/wolt") is None  # a Unix socket: this machine only
    monkeypatch.setenv("WOLT_CLUSTER_RESPONSE_STORE_URL", "postgresql://u:p@postgres.ml/wolt")
    s = settings()
    assert s.cluster_response_store("sqlite:////tmp/x.db") == "postgresql://u:p@postgres.ml/wolt"
    assert s.sources["cluster_response_store_url"] == "$WOLT_CLUSTER_RESPONSE_STORE_URL"


def test_request_logger_service_renders_valid_core_kinds_with_the_store_in_a_secret() -> None:
    from wolt_jupyter.backends.render import logger_url, render_request_logger

    store = "postgresql+psycopg://wolt:s3cret@10.233.0.1:5432/responses"
    ctx = ClusterContext(namespace="ml", response_store_url=store, revision=4, image="wolt-jupyter-runtime:t")
    manifests = render_request_logger(spec(), ctx)
    assert [m["kind"] for m in manifests] == ["Secret", "Deployment", "Service"]
    for m in manifests:
        assert strict_errors(m) is None, strict_errors(m)
    assert "s3cret" not in json.dumps(manifests)  # the value goes in at apply time only
    secret, deployment, service = manifests
    assert secret["stringData"] == {"WOLT_RESPONSE_STORE_URL": "****"}
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "wolt_jupyter.serving.eventlog"]
    assert c["args"][-4:] == ["--deployment", "eta-predictor", "--revision", "4"]
    assert c["env"] == [
        {
            "name": "WOLT_RESPONSE_STORE_URL",
            "valueFrom": {
                "secretKeyRef": {"name": "eta-predictor-credentials", "key": "WOLT_RESPONSE_STORE_URL"}
            },
        }
    ]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["metadata"]["name"] == "eta-predictor-logger"
    assert logger_url(spec(), ctx) == "http://eta-predictor-logger.ml.svc.cluster.local/"
    assert render_request_logger(spec(logging={"responses": False}), ctx) == []
    with pytest.raises(InvalidArgument, match="WOLT_CLUSTER_RESPONSE_STORE_URL"):
        render_request_logger(spec(), ClusterContext(namespace="ml"))
