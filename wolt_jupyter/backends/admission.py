"""What the operators would refuse, found before anything is sent to the cluster.

Two layers, both offline and pure:

- **the published CRD schemas** (``schemas/*.json``, derived from Seldon Core v1.18.2, KServe v0.20.0 and
  prometheus-operator v0.93.0 by ``scripts/derive_crd_schemas.py``; each file names its source). Unknown
  fields are refused, as the API server does under strict field validation;
- **the operators' admission webhooks**, for the rules a schema cannot express. Each rule names the webhook
  function it restates (Seldon Core v1.18.2 ``operator/apis/machinelearning.seldon.io/v1/seldondeployment_webhook.go``,
  KServe v0.20.0 ``pkg/apis/serving/v1beta1/inference_service_validation.go`` and ``component.go``).

Core kinds (ConfigMap, Deployment, Service) are the API server's own and are checked by the tests with
``kubernetes-validate --strict``; the cluster checks them again on apply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import InvalidArgument

SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMAS = {
    ("machinelearning.seldon.io/v1", "SeldonDeployment"): "seldondeployment-v1.json",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-v1.json",
}
_PRODUCTS = {
    "https://github.com/SeldonIO/seldon-core": "Seldon Core",
    "https://github.com/kserve/kserve": "KServe",
    "https://github.com/prometheus-operator/prometheus-operator": "prometheus-operator",
}


@cache
def schema(api_version: str, kind: str) -> dict[str, Any]:
    """The shipped JSON schema of a custom kind (with its ``x-source``)."""
    return json.loads((SCHEMA_DIR / SCHEMAS[(api_version, kind)]).read_text())


def source(api_version: str, kind: str) -> str:
    """``Seldon Core v1.18.2`` — where a kind's schema comes from, for messages."""
    src = schema(api_version, kind)["x-source"]
    return f"{_PRODUCTS.get(src['repository'], src['repository'])} {src['release']}"


def check_schema(manifest: dict[str, Any]) -> str | None:
    """Raise on the first field the published CRD refuses; the check's description, or None for core kinds."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key not in SCHEMAS:
        return None
    from wolt_jupyter.spec import import_jsonschema

    validator = import_jsonschema().Draft202012Validator(schema(*key))
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    what = f"{key[1]} {manifest.get('metadata', {}).get('name')}"
    if errors:
        err = errors[0]
        where = _path(err.absolute_path) or "(top level)"
        reason = f"{err.instance!r} has the wrong form" if err.validator == "pattern" else err.message
        raise InvalidArgument(f"{what} does not match the {source(*key)} CRD at {where}: {reason}")
    return f"{what} matches the {source(*key)} CRD schema"


def _path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# -- Seldon Core v1.18.2: SeldonDeploymentSpec.ValidateSeldonDeployment -----------------------------------------
_SELDON_PROTOCOLS = ("seldon", "tensorflow", "kfserving", "v2")


def seldon_rules(sdep: dict[str, Any]) -> None:
    name = sdep["metadata"]["name"]
    spec = sdep["spec"]
    predictors = spec.get("predictors") or []

    def refuse(reason: str) -> None:
        raise InvalidArgument(f"Seldon Core would refuse SeldonDeployment {name}: {reason}")

    if spec.get("protocol", "") not in ("", *_SELDON_PROTOCOLS):  # "Invalid protocol"
        refuse(f"protocol {spec['protocol']!r} is not one of {', '.join(_SELDON_PROTOCOLS)}")
    if not predictors:  # "Graph contains no predictors"
        refuse("it has no predictors")
    names = [p["name"] for p in predictors]
    if len(set(names)) != len(names):  # "Duplicate predictor name"
        refuse(f"predictor names must be unique, got {', '.join(names)}")
    shadows = [p for p in predictors if p.get("shadow")]
    if len(shadows) > 1:  # checkTraffic: "Multiple shadows are not allowed"
        refuse(f"multiple shadows are not allowed ({', '.join(p['name'] for p in shadows)})")
    if len(predictors) == 1 and shadows:  # validateShadow
        refuse("a shadow cannot be the only predictor")
    live = [p for p in predictors if not p.get("shadow")]
    total = sum(p.get("traffic", 0) for p in live)
    if len(live) > 1 and total != 100:  # "Traffic must sum to 100 for multiple predictors"
        refuse(f"live predictors' traffic must sum to 100, got {total}")
    if len(predictors) == 1 and 0 < total < 100:  # "Traffic must sum be 100 for a single predictor when set"
        refuse(f"a single predictor's traffic must be 100 when set, got {total}")
    for p in predictors:  # checkPredictiveUnits
        graph = p["graph"]
        if graph.get("implementation") and not graph.get("modelUri"):
            refuse(f"predictor {p['name']}: a prepackaged server needs graph.modelUri")
        if "logger" in graph and not (graph["logger"] or {}).get("mode"):
            refuse(f"predictor {p['name']}: graph.logger has no mode")


# -- KServe v0.20.0: validateInferenceService ------------------------------------------------------------------
_ISVC_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # IsvcNameFmt
# PredictorSpec.GetImplementations: one of these, or custom containers
_KSERVE_IMPLEMENTATIONS = (
    *("xgboost", "pytorch", "triton", "sklearn", "tensorflow", "onnx"),
    *("pmml", "lightgbm", "paddle", "huggingface", "model"),
)


def kserve_rules(isvc: dict[str, Any]) -> None:
    name = isvc["metadata"]["name"]
    predictor = isvc["spec"]["predictor"]

    def refuse(reason: str) -> None:
        raise InvalidArgument(f"KServe would refuse InferenceService {name}: {reason}")

    if not _ISVC_NAME.fullmatch(name):  # validateInferenceServiceName
        refuse(
            f"its name must start with a letter and be lowercase letters, digits and '-' "
            f"([a-z]([-a-z0-9]*[a-z0-9])?); rename it, e.g. 'm-{name}'"
        )
    chosen = [k for k in _KSERVE_IMPLEMENTATIONS if predictor.get(k)]
    if predictor.get("containers"):
        chosen.append("containers")
    if len(chosen) != 1:  # validateExactlyOneImplementation
        refuse(f"the predictor needs exactly one implementation, got {', '.join(chosen) or 'none'}")
    if (predictor.get("model") or {}).get("name"):  # validatePredictor
        refuse("the 'name' field is not allowed in a standard predictor")
    if predictor.get("minReplicas", 1) < 0:  # validateReplicas
        refuse("minReplicas must not be negative")
    percent = predictor.get("canaryTrafficPercent")
    if percent is not None and not 0 <= percent <= 100:
        refuse(f"canaryTrafficPercent must be 0-100, got {percent}")


RULES: dict[str, Callable[[dict[str, Any]], None]] = {
    "SeldonDeployment": seldon_rules,
    "InferenceService": kserve_rules,
}


def admit(manifests: list[dict[str, Any]]) -> list[str]:
    """Check every custom resource against its CRD schema and its operator's admission rules.

    Raises :class:`InvalidArgument` (one line) on the first refusal; returns what was checked, for the dry run.
    """
    done = []
    for m in manifests:
        described = check_schema(m)
        if described:
            done.append(described)
        rule = RULES.get(m.get("kind", ""))
        if rule is not None:
            rule(m)
            done.append(
                f"{m['kind']} {m['metadata']['name']} passes {source(m['apiVersion'], m['kind'])}'s admission rules"
            )
    return done
