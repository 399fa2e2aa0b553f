"""Small realistic manifests for a V2 inference server, written out by hand for the apply tests.

They mirror what the renderer produces for each target, but stay independent of it so these tests pin the
apply layer, not the renderer.
"""

from __future__ import annotations

from typing import Any

PORT = 8080
IMAGE = "ghcr.io/wolt-jupyter/runtime:0.1.0"


def _labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "wolt-jupyter",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "wolt-jupyter",
    }


def runtime(name: str = "eta", *, replicas: int = 2, image: str = IMAGE) -> list[dict[str, Any]]:
    """ConfigMap (the spec) + Deployment (V2 runtime on 8080, probes, scrape annotations) + Service."""
    labels = _labels(name)
    selector = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": "runtime"}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-spec", "labels": labels},
        "data": {
            "spec.yaml": f"name: {name}\nvariants:\n- name: main\n  model: models:/eta/3\n  traffic: 100\n"
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**labels, **selector},
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "name": "runtime",
                            "image": image,
                            "args": ["serve", "--spec", "/etc/wolt/spec.yaml", "--port", str(PORT)],
                            "ports": [{"name": "http", "containerPort": PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/v2/health/ready", "port": PORT},
                                "periodSeconds": 5,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/v2/health/live", "port": PORT},
                                "initialDelaySeconds": 10,
                            },
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "512Mi"},
                                "limits": {"memory": "1Gi"},
                            },
                            "volumeMounts": [{"name": "spec", "mountPath": "/etc/wolt"}],
                        }
                    ],
                    "volumes": [{"name": "spec", "configMap": {"name": f"{name}-spec"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": PORT}],
        },
    }
    return [config_map, deployment, service]


def seldon(name: str = "eta") -> dict[str, Any]:
    return {
        "apiVersion": "machinelearning.seldon.io/v1",
        "kind": "SeldonDeployment",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "protocol": "v2",
            "predictors": [
                {
                    "name": "main",
                    "traffic": 90,
                    "graph": {"name": "model", "implementation": "MLFLOW_SERVER", "modelUri": "s3://m/eta/3"},
                },
                {
                    "name": "challenger",
                    "traffic": 10,
                    "graph": {"name": "model", "implementation": "MLFLOW_SERVER", "modelUri": "s3://m/eta/7"},
                },
            ],
        },
    }


def kserve(name: str = "eta") -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "predictor": {
                "model": {
                    "modelFormat": {"name": "mlflow"},
                    "protocolVersion": "v2",
                    "storageUri": "s3://m/eta/3",
                }
            }
        },
    }


def pod_monitor(name: str = "eta") -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics"}],
        },
    }
