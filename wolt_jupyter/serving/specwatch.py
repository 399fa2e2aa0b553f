"""In a Kubernetes pod: follow the deployment's ConfigMap and re-route in place.

The ``kubernetes`` target keeps the pinned spec (and the revision it is) in a ConfigMap the pods mount. The
kubelet refreshes a mounted ConfigMap only at its next sync of the pod, a minute or more later, so a weight
change or a rollback through the mount alone would take that long. Each pod instead watches its ConfigMap
through the Kubernetes API (its service account may ``get`` and ``watch`` that one object, by name) and
applies a new spec with the same path as ``POST /admin/spec``: routing, weights and the champion change
within milliseconds of the update, with no pod replaced. A spec that needs a model this pod has not loaded
is left to the rollout the target starts for it (the pod template changes with the models).

The watch is the API's chunked stream of JSON events (``?watch=1&fieldSelector=metadata.name=NAME``,
Kubernetes API conventions); a broken stream or an expired ``resourceVersion`` (410) starts over with a
``GET``, backing off to 30 s while the API cannot be reached.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

log = logging.getLogger("wolt_jupyter.serving")

SPEC_CONFIGMAP_ENV = "WOLT_SPEC_CONFIGMAP"  # set by the kubernetes target: the ConfigMap to follow
REVISION_ENV = "WOLT_REVISION"  # the revision a pod's log rows name (revisions.serving_revision)
ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
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

    def __init__(self, plane: Any, name: str, applied_text: str, account_dir: Path = ACCOUNT_DIR) -> None:
        self.plane = plane
        self.name = name
        self.account_dir = account_dir
        self.namespace = (account_dir / "namespace").read_text().strip()
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        self.host = f"[{host}]" if ":" in host else host
        self.port = int(os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
        self.applied = applied_text  # the spec text this process serves
        self.changes = 0  # specs applied in place
        self.stopped = threading.Event()
        self._said: set[str] = set()

    @classmethod
    def from_env(cls, plane: Any, spec_path: Path) -> SpecWatch | None:
        """The watch a pod of the kubernetes target runs; None elsewhere (no ConfigMap named, no account)."""
        name = os.environ.get(SPEC_CONFIGMAP_ENV)
        if not name or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            return None
        try:
            return cls(plane, name, spec_path.read_text())
        except OSError as exc:  # no token mounted (automountServiceAccountToken: false)
            log.warning("routing changes wait for a rollout: no service account to watch %s (%s)", name, exc)
            return None

    def start(self) -> SpecWatch:
        threading.Thread(target=self._run, name="wolt-specwatch", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    # -- the loop ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = 1.0
        while not self.stopped.is_set():
            try:
                version = self._get()
                backoff = 1.0
                self._watch(version)
            except Exception as exc:  # the API away, a token rotated badly: say it once per kind, retry
                self._say(f"cannot follow ConfigMap {self.name}: {type(exc).__name__}: {exc}")
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _get(self) -> str:
        obj = self._json(f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}")
        self._apply(obj)
        return str(obj["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        query = urllib.parse.urlencode({
            "watch": "1", "fieldSelector": f"metadata.name={self.name}", "resourceVersion": version,
            "allowWatchBookmarks": "true", "timeoutSeconds": str(WATCH_TIMEOUT_S),
        })  # fmt: skip
        conn, resp = self._open(
            f"/api/v1/namespaces/{self.namespace}/configmaps?{query}", WATCH_TIMEOUT_S + 30
        )
        try:
            for line in resp:
                if self.stopped.is_set():
                    return
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind in ("ADDED", "MODIFIED"):
                    self._apply(obj)
                elif kind == "ERROR":  # 410 Gone: the version is too old; start over from a GET
                    return
        finally:
            conn.close()

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

    # -- HTTP -------------------------------------------------------------------------------------------------
    def _open(self, path: str, timeout: float) -> tuple[Any, Any]:
        import http.client
        import ssl

        context = ssl.create_default_context(cafile=str(self.account_dir / "ca.crt"))
        conn = http.client.HTTPSConnection(self.host, self.port, context=context, timeout=timeout)
        token = (self.account_dir / "token").read_text().strip()  # re-read: bound tokens rotate
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            body = resp.read(300).decode(errors="replace")
            conn.close()
            raise OSError(f"HTTP {resp.status} from the API for {path.split('?')[0]}: {body}")
        return conn, resp

    def _json(self, path: str) -> dict[str, Any]:
        conn, resp = self._open(path, 30)
        try:
            return json.loads(resp.read())
        finally:
            conn.close()

    def _say(self, line: str) -> None:
        key = line.split(":", 2)[1] if ":" in line else line
        if key not in self._said:
            self._said.add(key)
            log.warning("%s (retrying; routing changes wait for a rollout meanwhile)", line)
