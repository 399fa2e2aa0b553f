"""The kinds the test API server serves, and the `Status` errors it answers with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class ResourceType:
    """One served kind: where it lives in the API and whether it has a /status subresource."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    status: bool = True
    builtin: bool = True  # built-ins merge lists by key on apply; CRD lists are atomic

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`deployments.apps`, `configmaps`: how the real server names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


BUILTIN_TYPES = (
    ResourceType("", "v1", "ConfigMap", "configmaps", status=False),
    ResourceType("", "v1", "Secret", "secrets", status=False),
    ResourceType("", "v1", "Service", "services"),
    ResourceType("", "v1", "Pod", "pods"),
    ResourceType("", "v1", "Namespace", "namespaces", namespaced=False),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", status=False),
    ResourceType("apps", "v1", "Deployment", "deployments"),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles", status=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", status=False),
)
CRD_TYPES = (
    ResourceType("machinelearning.seldon.io", "v1", "SeldonDeployment", "seldondeployments", builtin=False),
    ResourceType("serving.kserve.io", "v1beta1", "InferenceService", "inferenceservices", builtin=False),
    ResourceType("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors", status=False, builtin=False),
)
CRD_GROUPS = tuple(t.group for t in CRD_TYPES)


class ApiError(Exception):
    """An error answer, rendered as the `Status` object the real server sends."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


def not_served() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rtype.qualified} "{name}" not found',
        {"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
