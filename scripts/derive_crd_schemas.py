"""Derive the JSON schemas in ``wolt_jupyter/backends/schemas/`` from the operators' published CRDs.

Maintainer tool, not run by the tests: the derived files are committed. Each output names the project,
release and file it came from. To refresh after an operator release, check the three repositories out at
the release tag and run::

    python scripts/derive_crd_schemas.py \
        --seldon  seldon-core/helm-charts/seldon-core-operator/templates/customresourcedefinition_v1_seldondeployments.machinelearning.seldon.io.yaml \
        --kserve  kserve/config/crd/full/serving.kserve.io_inferenceservices.yaml \
        --podmonitor prometheus-operator/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml

How a CRD becomes a (smaller) JSON schema:

- the paths wolt-jupyter renders (``KEEP`` below) keep the CRD's full schema below them;
- every other field the CRD declares beside them keeps only its type, so an official field is accepted
  (e.g. KServe ``spec.canary``) and a misspelt one is not;
- an object with declared properties refuses unknown fields, as the API server does under strict field
  validation (a structural schema prunes them silently otherwise, which is worse: the setting is lost);
- ``nullable`` and ``x-kubernetes-int-or-string`` become their JSON-schema equivalents.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parents[1] / "wolt_jupyter" / "backends" / "schemas"

# True: keep the whole subtree; a dict: descend ("items" descends into an array's element schema)
KEEP: dict[str, dict[str, Any]] = {
    "seldon": {
        "apiVersion": True,
        "kind": True,
        "metadata": True,
        "spec": {
            "name": True,
            "protocol": True,
            "predictors": {
                "items": {
                    "name": True,
                    "replicas": True,
                    "traffic": True,
                    "shadow": True,
                    "labels": True,
                    "annotations": True,
                    "graph": {
                        **dict.fromkeys(("name", "type", "implementation", "modelUri", "logger"), True),
                        "serviceAccountName": True,
                    },
                    "componentSpecs": {
                        "items": {"spec": {"containers": {"items": {"name": True, "resources": True}}}}
                    },
                }
            },
        },
    },
    "kserve": {
        "apiVersion": True,
        "kind": True,
        "metadata": True,
        "spec": {
            "predictor": {
                "minReplicas": True,
                "canaryTrafficPercent": True,
                "serviceAccountName": True,
                "logger": True,
                "model": {
                    "modelFormat": True,
                    "protocolVersion": True,
                    "storageUri": True,
                    "resources": True,
                },
            }
        },
    },
    "podmonitor": {
        "apiVersion": True,
        "kind": True,
        "metadata": True,
        "spec": {
            "selector": True,
            "podMetricsEndpoints": {"items": {"port": True, "path": True, "interval": True}},
        },
    },
}
SOURCES = {
    "seldon": {
        "repository": "https://github.com/SeldonIO/seldon-core",
        "release": "v1.18.2",
        "path": "helm-charts/seldon-core-operator/templates/"
        "customresourcedefinition_v1_seldondeployments.machinelearning.seldon.io.yaml",
        "version": "v1",
        "out": "seldondeployment-v1.json",
    },
    "kserve": {
        "repository": "https://github.com/kserve/kserve",
        "release": "v0.20.0",
        "path": "config/crd/full/serving.kserve.io_inferenceservices.yaml",
        "version": "v1beta1",
        "out": "inferenceservice-v1beta1.json",
    },
    "podmonitor": {
        "repository": "https://github.com/prometheus-operator/prometheus-operator",
        "release": "v0.93.0",
        "path": "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
        "version": "v1",
        "out": "podmonitor-v1.json",
    },
}
# OpenAPI keywords that mean the same in JSON schema (descriptions and formats are left out)
_COPIED = (
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "required",
)


def load_crd_schema(path: Path, version: str) -> dict[str, Any]:
    # Helm templates wrap the CRD in {{ if }} lines; they are not YAML
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("{{"))
    crd = yaml.safe_load(text)
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    return served["schema"]["openAPIV3Schema"]


def convert(schema: dict[str, Any], keep: Any = True) -> dict[str, Any]:
    """The CRD schema as JSON schema, pruned to ``keep``."""
    out: dict[str, Any] = {}
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    elif "anyOf" in schema:
        out["anyOf"] = [convert(s) for s in schema["anyOf"]]
    elif "type" in schema:
        out["type"] = [schema["type"], "null"] if schema.get("nullable") else schema["type"]
    for key in _COPIED:
        if key in schema:
            out[key] = schema[key]
    if "properties" in schema:
        props = {}
        for name, sub in sorted(schema["properties"].items()):
            if keep is True:
                props[name] = convert(sub)
            elif isinstance(keep, dict) and name in keep:
                props[name] = convert(sub, keep[name])
            else:  # declared but not rendered: its type only
                props[name] = _shallow(sub)
        out["properties"] = props
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    elif isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = convert(schema["additionalProperties"])
    if "items" in schema:
        items_keep = keep if keep is True else (keep or {}).get("items", {})
        out["items"] = convert(schema["items"], items_keep)
    return out


def _shallow(schema: dict[str, Any]) -> dict[str, Any]:
    if schema.get("x-kubernetes-int-or-string"):
        return {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    return {"type": schema["type"]} if "type" in schema else {}


def derive(which: str, crd_path: Path) -> dict[str, Any]:
    src = SOURCES[which]
    schema = load_crd_schema(crd_path, src["version"])
    schema = {k: v for k, v in schema.items() if k != "properties"} | {
        "properties": {k: v for k, v in schema["properties"].items() if k != "status"}  # never rendered
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": (
            f"Derived from the {src['version']} openAPIV3Schema of {src['repository']} {src['release']}, "
            f"{src['path']} by scripts/derive_crd_schemas.py: the fields wolt-jupyter renders in full, the "
            "other declared fields by type only, unknown fields refused (strict field validation)."
        ),
        "x-source": {k: src[k] for k in ("repository", "release", "path", "version")},
        **convert(schema, KEEP[which]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for which in SOURCES:
        parser.add_argument(f"--{which}", type=Path, help=f"the CRD file ({SOURCES[which]['path']})")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for which, src in SOURCES.items():
        path = getattr(args, which)
        if path is None:
            continue
        (OUT / src["out"]).write_text(json.dumps(derive(which, path), indent=1, sort_keys=False) + "\n")
        print(f"wrote {OUT / src['out']}")


if __name__ == "__main__":
    main()
