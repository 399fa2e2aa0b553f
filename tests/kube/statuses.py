"""What the test server's controller writes into `status`, shaped like the real controllers' output.

Deployment status as kube-controller-manager writes it (zero counts omitted, Available/Progressing
conditions), SeldonDeployment `state`, InferenceService conditions and `url`.
"""

from __future__ import annotations

from .kinds import now as _now


def deployment_status(
    name: str, generation: int, replicas: int, ready: int, *, deadline_exceeded: bool = False
) -> dict:
    now = _now()
    available = ready >= replicas
    status: dict = {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas}
    if ready:  # the real controller omits zero counts
        status.update(readyReplicas=ready, availableReplicas=ready)
    if replicas - ready:
        status["unavailableReplicas"] = replicas - ready
    status["conditions"] = [
        {
            "type": "Available",
            "status": "True" if available else "False",
            "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "message": "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        },
        {
            "type": "Progressing",
            "status": "True",
            "reason": "NewReplicaSetAvailable" if available else "ReplicaSetUpdated",
            "message": f'ReplicaSet "{name}-7d4b9c" has '
            + ("successfully progressed." if available else "is progressing."),
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        },
    ]
    if deadline_exceeded:
        status["conditions"][1].update(
            status="False",
            reason="ProgressDeadlineExceeded",
            message=f'ReplicaSet "{name}-7d4b9c" has timed out progressing.',
        )
    return status


def isvc_status(name: str, ns: str, generation: int, *, ready: bool) -> dict:
    now = _now()
    if ready:
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("IngressReady", "PredictorReady", "Ready")
        ]
        return {
            "observedGeneration": generation,
            "url": f"http://{name}.{ns}.example.com",
            "conditions": conditions,
        }
    reason, message = (
        "RevisionMissing",
        f'Revision "{name}-predictor-00001" failed: container failed to start',
    )
    return {
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "PredictorReady",
                "status": "False",
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": reason,
                "message": message,
                "lastTransitionTime": now,
            },
        ],
    }


def seldon_status(name: str, ns: str, *, available: bool, failed: bool) -> dict:
    status = {
        "state": "Available" if available else "Failed" if failed else "Creating",
        "description": "" if available else f"Deployment {name}: 0/1 replicas available",
    }
    if available:
        status["address"] = {"url": f"http://{name}-default.{ns}.svc.cluster.local:8000/v2/models"}
    return status
