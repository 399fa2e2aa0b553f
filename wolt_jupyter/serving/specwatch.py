"""In a Kubernetes pod: follow the deployment's ConfigMap and re-route in place.

The ``kubernetes`` target keeps the pinned spec (and the revision it is) in a ConfigMap the pods mount. The
kubelet refreshes a mounted ConfigMap only at its next sync of the pod, a minute or more later, so a weight
change or a rollback through the mount alone would take that long. Each pod instead watches its ConfigMap
through the Kubernetes API (its service account may ``get`` and ``watch`` that one object, by name) and
applies a new spec with the same path as ``POST /admin/spec``: routing, weights and the champion change
within milliseconds of the update, with no pod replaced. A spec that needs a model this pod has not loaded
is left to the rollout the target starts for it (the pod template changes with the models).

The API is reached as the update service in a pod reaches it (:class:`~wolt_jupyter.kubeclient.
KubeCluster` over its in-cluster transport; the runtime image has no ``kubernetes`` package). A broken
stream or an expired ``resourceVersion`` (410) starts over with a ``GET``, backing off to 30 s while the API
cannot be reached.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("wolt_jupyter.serving")

SPEC_CONFIGMAP_ENV = "WOLT_SPEC_CONFIGMAP"  # set by the kubernetes target: the ConfigMap to follow
REVISION_ENV = "WOLT_REVISION"  # the revision a pod's log rows name (revisions.serving_revision)
WATCH_TIMEOUT_S = 290  # the API closes a watch after this; we ask again
MAX_BACKOFF_S = 30.0


def initial_revision(spec_path: Path) -> None:
    """The revision beside the mounted spec (the ConfigMap's ``revision`` key) is the one this pod starts
    with, unless the environment names one."""
    if os.environ.get(REVISION_ENV):
        return
    try:
        text = (spec_path.parent / "revision").read_text().strip()
    except OSError:
        return
    if text.isdigit():
        os.environ[REVISION_ENV] = text


class SpecWatch:
    """A daemon thread applying each new version of the ConfigMap ``name`` to ``plane`` (on its loop)."""

    def __init__(self, plane: Any, name: str, applied_text: str, cluster: Any, namespace: str) -> None:
        self.plane = plane
        self.name = name
        self.cluster = cluster  # a KubeCluster
        self.namespace = namespace
        self.applied = applied_text  # the spec text this process serves
        self.changes = 0  # specs applied in place
        self.stopped = threading.Event()
        self._said: set[str] = set()

    @classmethod
    def from_env(cls, plane: Any, spec_path: Path) -> SpecWatch | None:
        """The watch a pod of the kubernetes target runs; None elsewhere (no ConfigMap named, not in a pod)."""
        name = os.environ.get(SPEC_CONFIGMAP_ENV)
        if not name:
            return None
        # the runtime's one use of the cluster client (lazy: a local runtime never pays for it)
        from wolt_jupyter.kubeclient import (
            SERVICE_ACCOUNT_DIR,
            InClusterTransport,
            KubeCluster,
            in_cluster,
        )

        if not in_cluster():
            log.warning("routing changes wait for a rollout: %s names ConfigMap %s, but this is not a pod with a "
                        "service account token", SPEC_CONFIGMAP_ENV, name)  # fmt: skip
            return None
        try:
            namespace = (Path(SERVICE_ACCOUNT_DIR) / "namespace").read_text().strip()
            cluster = KubeCluster(api_client=InClusterTransport(), request_timeout=30)
            return cls(plane, name, spec_path.read_text(), cluster, namespace)
        except Exception as exc:
            log.warning("routing changes wait for a rollout: cannot watch ConfigMap %s (%s)", name, exc)
            return None

    def start(self) -> SpecWatch:
        threading.Thread(target=self._run, name="wolt-specwatch", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _run(self) -> None:
        backoff = 1.0
        while not self.stopped.is_set():
            try:
                since = self._get()
                backoff = 1.0
                while not self.stopped.is_set() and since:
                    since = self._follow(since)
            except Exception as exc:  # the API away, a token rotated badly: said once per kind, retried
                self._say(f"cannot follow ConfigMap {self.name}: {type(exc).__name__}: {exc}")
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _get(self) -> str:
        obj = self.cluster.get("v1", "ConfigMap", self.name, namespace=self.namespace)
        if obj is None:
            raise LookupError(f"ConfigMap {self.name} is gone")
        self._apply(obj)
        return str(obj["metadata"]["resourceVersion"])

    def _follow(self, since: str) -> str:
        """One watch from ``since``; the version to go on from, or "" to read the object again."""
        for event in self.cluster.watch("v1", "ConfigMap", self.name, namespace=self.namespace, since=since,
                                        timeout=WATCH_TIMEOUT_S):  # fmt: skip
            if self.stopped.is_set():
                return ""
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":  # 410 Gone: too old a version
                return ""
            since = (obj.get("metadata") or {}).get("resourceVersion", since)
            if kind in ("ADDED", "MODIFIED"):
                self._apply(obj)
        return since

    # -- applying ---------------------------------------------------------------------------------------------
    def _apply(self, obj: dict[str, Any]) -> None:
        data = obj.get("data") or {}
        text = data.get("spec.yaml")
        if not text or text == self.applied:
            return
        from wolt_jupyter.spec import DeploymentSpec

        doc = DeploymentSpec.from_yaml(text).to_dict()
        revision = str(data.get("revision") or "")
        done: concurrent.futures.Future = concurrent.futures.Future()

        def on_loop() -> None:  # the router changes on the event loop, between requests
            try:
                done.set_result(self._apply_on_loop(doc, revision))
            except Exception as exc:
                done.set_exception(exc)

        t0 = time.monotonic()
        self.plane.loop.call_soon_threadsafe(on_loop)
        conflict = done.result(timeout=30)
        self.applied = text  # also when it needs a rollout: asking again would not change the answer
        if conflict:
            log.info("ConfigMap %s revision %s is not for this pod to apply (%s): a rollout replaces it",
                     self.name, revision or "?", conflict)  # fmt: skip
            return
        self.changes += 1
        log.info("ConfigMap %s revision %s applied in place in %.1f ms", self.name, revision or "?",
                 (time.monotonic() - t0) * 1000)  # fmt: skip

    def _apply_on_loop(self, doc: dict[str, Any], revision: str) -> str | None:
        before = os.environ.get(REVISION_ENV)
        if revision.isdigit():  # the rows from now on name the new revision
            os.environ[REVISION_ENV] = revision
        conflict = self.plane.apply_spec(doc)
        if conflict and before is not None:
            os.environ[REVISION_ENV] = before
        elif conflict:
            os.environ.pop(REVISION_ENV, None)
        return conflict

    def _say(self, line: str) -> None:
        key = line.split(":", 2)[1] if ":" in line else line
        if key not in self._said:
            self._said.add(key)
            log.warning("%s (retrying; routing changes wait for a rollout meanwhile)", line)
