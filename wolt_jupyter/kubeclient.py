"""Apply rendered manifests to a Kubernetes cluster: a thin layer over the official `kubernetes` client.

Rendering (spec -> manifests) is pure and lives elsewhere; this module only talks to the API server:
server-side apply for any kind (core and custom resources alike, resolved through discovery), get / list /
delete, waiting for readiness with a watch, and a diff for --dry-run. Every failure becomes one
`ClusterError` line a data scientist can act on, never a page of HTTP headers.

`kubernetes` is imported inside methods so `import wolt_jupyter` stays fast. In a pod (the update service runs in
the runtime image, which has no `kubernetes` package) the calls go through :class:`InClusterTransport`: the
pod's service account token, its CA and the ``kubernetes`` Service's address, over urllib3 — the same requests.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wolt_jupyter.errors import ClusterError, ClusterUnreachable, InvalidArgument
from wolt_jupyter.spec import check_dns_label

# KubeCluster has a method named `list`, which shadows the builtin in annotations inside the class
Manifests = list[dict]
Query = list[tuple[str, str]]

__all__ = ["FAILED", "READINESS", "READY", "WAITING", "ClusterError", "KubeCluster", "readiness_rule"]

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
# connect quickly, fail quickly: a wrong kubeconfig should say so in seconds, not after long retries
_CONNECT_TIMEOUT = 5.0
_POD_CHECK_PERIOD_S = 2.0  # while a Deployment rolls out, its new pods are looked at this often
_LOG_TAIL_LINES = 12  # of a failed container's log, in the error that says why
# products that install the custom kinds we deploy, for "is X installed?" hints
_INSTALLERS = {
    "serving.kserve.io": "KServe",
    "machinelearning.seldon.io": "Seldon Core",
    "monitoring.coreos.com": "the Prometheus Operator",
}
# noise the server adds to every object: left out of diffs
_SERVER_METADATA = ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation")


@dataclass(frozen=True)
class _Resource:
    """Where a kind lives in the API, as discovery reports it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


class KubeCluster:
    """One cluster, reached through a kubeconfig (or in-cluster credentials, or a ready ApiClient / transport)."""

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        api_client: Any = None,
        request_timeout: float = 30.0,
    ) -> None:
        """`request_timeout` bounds each API call (watches get their own, longer bound). `api_client`: an
        official ApiClient or an :class:`InClusterTransport`."""
        if api_client is None:
            self._client = _load_client(kubeconfig, context)
        elif isinstance(api_client, InClusterTransport):
            self._client = api_client
        else:
            self._client = _OfficialTransport(api_client)
        self._timeout = (min(_CONNECT_TIMEOUT, request_timeout), request_timeout)
        self._discovery: dict[str, dict[str, _Resource]] = {}

    @property
    def host(self) -> str:
        return self._client.host

    # --- public API -------------------------------------------------------------------------------

    def apply(
        self,
        manifests: list[dict],
        *,
        namespace: str,
        field_manager: str = "wolt-jupyter",
        force: bool = True,
        dry_run: bool = False,
    ) -> list[dict]:
        """Server-side apply each manifest; return the objects as the server answered.

        Server-side apply (not create-or-replace) so re-applying an unchanged manifest is a no-op on the
        server, fields another tool owns are kept, and fields we stop rendering are removed.
        """
        check_dns_label(namespace, "namespace")
        prepared = [(self._resource_of(m), self._prepare(m, namespace)) for m in _checked(manifests)]
        query = [
            ("fieldManager", field_manager),
            ("force", "true" if force else "false"),
            ("fieldValidation", "Strict"),  # an unknown or duplicated field is an error, not silently dropped
        ]
        if dry_run:
            query.append(("dryRun", "All"))
        applied = []
        for resource, body in prepared:
            path = resource.path(namespace, body["metadata"]["name"])
            try:
                applied.append(self._request("PATCH", path, query, body, content_type=APPLY_CONTENT_TYPE))
            except (
                _PathGone
            ):  # discovery listed the kind, yet its path is gone: the CRD was removed meanwhile
                self._discovery.pop(resource.api_version, None)
                raise ClusterError(_no_kind(resource.api_version, resource.kind, self.host)) from None
        return applied

    def get(self, api_version: str, kind: str, name: str, *, namespace: str) -> dict | None:
        """The live object, or None when it does not exist."""
        check_dns_label(namespace, "namespace")
        check_dns_label(name, f"{kind} name")
        resource = self._resource(api_version, kind)
        try:
            return self._request("GET", resource.path(namespace, name))
        except _Missing:
            return None

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the cluster knows the kind (e.g. is the Prometheus operator's PodMonitor installed?)."""
        try:
            self._resource(api_version, kind)
        except _NoKind:
            return False
        return True

    def list(
        self, api_version: str, kind: str, *, namespace: str, label_selector: str | None = None
    ) -> list[dict]:
        check_dns_label(namespace, "namespace")
        resource = self._resource(api_version, kind)
        query = [("labelSelector", label_selector)] if label_selector else []
        items = self._request("GET", resource.path(namespace), query).get("items") or []
        for item in items:  # built-in lists omit them per item; callers want self-describing objects
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def merge_patch(self, api_version: str, kind: str, name: str, patch: dict, *, namespace: str) -> dict:
        """A JSON merge patch (RFC 7386) of one object: keys set, keys with null removed, the rest kept — so
        writers of different keys of one ConfigMap never overwrite each other. The object as patched."""
        check_dns_label(namespace, "namespace")
        check_dns_label(name, f"{kind} name")
        resource = self._resource(api_version, kind)
        path = resource.path(namespace, name)
        return self._request("PATCH", path, [], patch, content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, name: str, *, namespace: str) -> bool:
        """Delete one object; False if it was not there (deleting twice is not an error)."""
        check_dns_label(namespace, "namespace")
        check_dns_label(name, f"{kind} name")
        resource = self._resource(api_version, kind)
        try:
            self._request("DELETE", resource.path(namespace, name), [("propagationPolicy", "Background")])
        except _Missing:
            return False
        return True

    def wait_endpoints(self, service: str, want: int, *, namespace: str, timeout: float = 60.0) -> int:
        """Poll the Service's EndpointSlices until ``want`` ready endpoints are listed (what kube-proxy routes
        to); return how many there were at the end. A cluster that serves no EndpointSlice returns ``want``."""
        check_dns_label(namespace, "namespace")
        check_dns_label(service, "Service name")
        if not self.serves("discovery.k8s.io/v1", "EndpointSlice"):
            return want
        deadline = time.monotonic() + timeout
        ready = 0
        while True:
            slices = self.list(
                "discovery.k8s.io/v1", "EndpointSlice", namespace=namespace,
                label_selector=f"kubernetes.io/service-name={service}",
            )  # fmt: skip
            addresses = {
                address
                for piece in slices
                for endpoint in piece.get("endpoints") or []
                if (endpoint.get("conditions") or {}).get("ready") and not (endpoint.get("conditions") or {}).get("terminating")
                for address in endpoint.get("addresses") or []
            }  # fmt: skip
            ready = len(addresses)
            if ready >= want or time.monotonic() >= deadline:
                return ready
            time.sleep(0.2)

    def log_tail(
        self,
        pod: str,
        container: str,
        *,
        namespace: str,
        previous: bool = False,
        lines: int = _LOG_TAIL_LINES,
    ) -> str:
        """The last lines a container wrote (the crashed instance's with ``previous``), as one line; "" if none."""
        check_dns_label(namespace, "namespace")
        query = [("container", container), ("tailLines", str(lines))]
        if previous:
            query.append(("previous", "true"))
        try:
            raw = self._send(
                "GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", query, None, "application/json",
                self._timeout,
            )  # fmt: skip
            raw.read()
        except ClusterError:
            return ""
        text = (raw.data or b"").decode(errors="replace").strip()
        return _one_line(text[-2000:])

    def wait_ready(
        self,
        manifests: Manifests,
        *,
        namespace: str,
        timeout: float = 300,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        """Block until every workload among `manifests` is ready, following each with a watch.

        Deployments, SeldonDeployments and InferenceServices have a readiness rule; other kinds (Service,
        ConfigMap, PodMonitor) are ready once applied. On timeout the error names each object that is not
        ready and its last conditions, which is usually the reason (image pull, crash loop, quota).
        """
        check_dns_label(namespace, "namespace")
        deadline = time.monotonic() + timeout
        pending = [m for m in _checked(manifests) if readiness_rule(m["kind"]) is not None]
        for manifest in pending:
            resource = self._resource_of(manifest)
            name = manifest["metadata"]["name"]
            if not self._watch_until_ready(resource, name, namespace, deadline, on_progress):
                waiting = [
                    f"{m['kind']} {m['metadata']['name']} ({self._why_not_ready(m, namespace)})"
                    for m in pending
                    if not self._is_ready_now(m, namespace)
                ]
                raise ClusterError(
                    f"timed out after {timeout:g}s waiting in namespace {namespace}: not ready: "
                    + "; ".join(waiting or [f"{manifest['kind']} {name}"])
                )

    def diff(self, manifests: Manifests, *, namespace: str) -> str:
        """Unified YAML diff between what runs and what an apply would leave (asks the server: dry-run).

        The server's dry run is the only honest answer: it applies defaults and merges with fields other
        managers own, which no client-side comparison can reproduce.
        """
        import yaml

        wanted = self.apply(manifests, namespace=namespace, dry_run=True)
        chunks: list[str] = []
        for manifest, after in zip(_checked(manifests), wanted, strict=True):
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            live = self.get(manifest["apiVersion"], kind, name, namespace=namespace)
            if kind == "Secret":  # a diff is shown: keys only, never values
                from wolt_jupyter.masking import masked_secret

                live = masked_secret(live) if live else live
                after = masked_secret(after) if after else after
            before_text = yaml.safe_dump(_comparable(live), sort_keys=True) if live else ""
            after_text = yaml.safe_dump(_comparable(after), sort_keys=True)
            chunks.extend(
                difflib.unified_diff(
                    before_text.splitlines(keepends=True),
                    after_text.splitlines(keepends=True),
                    fromfile=f"live/{kind}/{name}" if live else "/dev/null",
                    tofile=f"applied/{kind}/{name}",
                )
            )
        return "".join(chunks)

    # --- readiness --------------------------------------------------------------------------------

    def _watch_until_ready(
        self,
        resource: _Resource,
        name: str,
        namespace: str,
        deadline: float,
        on_progress: Callable[[str], None] | None,
    ) -> bool:
        """Follow one object with a watch (re-opened from the last resourceVersion) until ready or deadline."""
        rule = READINESS[resource.kind]  # callers pass workloads only
        last_line = None
        pods_failed = _POD_CHECKS.get(resource.kind)

        def report(obj: dict | None) -> bool:
            nonlocal last_line
            state, line = rule(obj) if obj is not None else (WAITING, "not created yet")
            line = f"{name}: {line}"
            if on_progress is not None and line != last_line:
                on_progress(line)
            last_line = line
            if state == FAILED:  # waiting longer cannot help: say so now, not at the timeout
                raise ClusterError(
                    f"{resource.kind} {name} in namespace {namespace} failed: {line[len(name) + 2 :]}"
                )
            return state == READY

        listing = self._request("GET", resource.path(namespace), [("fieldSelector", f"metadata.name={name}")])
        items = listing.get("items") or []
        if report(items[0] if items else None):
            return True
        since = listing.get("metadata", {}).get("resourceVersion", "")
        current = items[0] if items else None
        while (remaining := deadline - time.monotonic()) > 0:
            if pods_failed is not None and current is not None:
                # a pod that cannot start never changes the workload's status: look at the pods themselves
                why = pods_failed(self, current, namespace)
                if why:
                    raise ClusterError(f"{resource.kind} {name} in namespace {namespace} failed: {why}")
            watch_for = remaining if pods_failed is None else min(remaining, _POD_CHECK_PERIOD_S)
            opened, events = time.monotonic(), 0
            for event in self._watch_named(resource, name, namespace, since, watch_for):
                events += 1
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":  # e.g. 410 Gone: our resourceVersion is too old
                    since = ""
                    break
                since = obj.get("metadata", {}).get("resourceVersion", since)
                if event.get("type") == "BOOKMARK":
                    continue
                current = None if event.get("type") == "DELETED" else obj
                if report(current):
                    return True
                if time.monotonic() >= deadline:
                    return False
            if not events and time.monotonic() - opened < min(1, watch_for):
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))  # no hot loop on a failing server
        return False

    def watch(
        self, api_version: str, kind: str, name: str, *, namespace: str, since: str, timeout: float
    ) -> Iterator[dict]:
        """The watch events of one object, by name, after resourceVersion ``since``, until the server ends the
        watch (about ``timeout`` s) or the stream breaks. A field selector on the name, so a Role's
        ``resourceNames`` can allow it. An ``ERROR`` event (410 Gone: ``since`` too old) is the caller's to
        handle, by reading the object again."""
        check_dns_label(namespace, "namespace")
        check_dns_label(name, f"{kind} name")
        yield from self._watch_named(self._resource(api_version, kind), name, namespace, since, timeout)

    def _watch_named(
        self, resource: _Resource, name: str, namespace: str, since: str, timeout: float
    ) -> Iterator[dict]:
        query = [
            ("watch", "true"),
            ("fieldSelector", f"metadata.name={name}"),
            ("resourceVersion", since),
            ("timeoutSeconds", str(max(1, int(timeout + 0.999)))),
            ("allowWatchBookmarks", "true"),
        ]
        yield from self._stream(resource.path(namespace), query, timeout)

    def _is_ready_now(self, manifest: dict, namespace: str) -> bool:
        rule = readiness_rule(manifest["kind"])
        obj = self.get(
            manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"], namespace=namespace
        )
        return rule is None or (obj is not None and rule(obj)[0] == READY)

    def _why_not_ready(self, manifest: dict, namespace: str) -> str:
        rule = readiness_rule(manifest["kind"])
        obj = self.get(
            manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"], namespace=namespace
        )
        if obj is None or rule is None:
            return "not found"
        summary = rule(obj)[1]
        conditions = [
            f"{c.get('type')}={c.get('status')}"
            + (f" {c['reason']}" if c.get("reason") else "")
            + (f": {c['message']}" if c.get("message") else "")
            for c in (obj.get("status") or {}).get("conditions") or []
            if c.get("status") != "True"
        ]
        return summary + (f"; last conditions: {', '.join(conditions)}" if conditions else "")

    # --- discovery --------------------------------------------------------------------------------

    def _resource_of(self, manifest: dict) -> _Resource:
        return self._resource(manifest["apiVersion"], manifest["kind"])

    def _resource(self, api_version: str, kind: str) -> _Resource:
        """apiVersion/kind -> plural and scope, from the server's discovery documents (cached)."""
        if api_version not in self._discovery:
            path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                doc = self._request("GET", path)
            except _Missing:
                doc = {"resources": []}
            self._discovery[api_version] = {
                r["kind"]: _Resource(api_version, r["kind"], r["name"], bool(r.get("namespaced")))
                for r in doc.get("resources") or []
                if "/" not in r.get("name", "")
            }
        resource = self._discovery[api_version].get(kind)
        if resource is None:
            raise _NoKind(_no_kind(api_version, kind, self.host))
        return resource

    # --- HTTP -------------------------------------------------------------------------------------

    def _prepare(self, manifest: dict, namespace: str) -> dict:
        body = copy.deepcopy(manifest)
        meta = body.setdefault("metadata", {})
        if self._resource_of(manifest).namespaced:
            if meta.get("namespace", namespace) != namespace:
                raise InvalidArgument(
                    f"{manifest['kind']} {meta['name']} says namespace {meta['namespace']!r} but is being "
                    f"applied to {namespace!r}: drop metadata.namespace from the manifest or apply it there"
                )
            meta["namespace"] = namespace
        for server_owned in (*_SERVER_METADATA, "selfLink"):
            meta.pop(server_owned, None)
        body.pop("status", None)
        return body

    def _request(
        self,
        method: str,
        path: str,
        query: Query | None = None,
        body: dict | None = None,
        *,
        content_type: str = "application/json",
    ) -> dict:
        raw = self._send(method, path, query, body, content_type, self._timeout)
        raw.read()
        return json.loads(raw.data or b"{}")

    def _stream(self, path: str, query: Query, timeout: float) -> Iterator[dict]:
        """Watch events, one JSON object a line, until the server closes the stream or `timeout` passes.

        The server rounds timeoutSeconds to whole seconds; the read timeout keeps us to our own deadline.
        """
        raw = self._send("GET", path, query, None, "application/json", (self._timeout[0], timeout + 0.2))
        buffer, finished = b"", False
        try:
            for chunk in raw.response.stream(64 * 1024, decode_content=True):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
            finished = True
        except Exception as exc:
            # a stream cut mid-way (API server restart, idle proxy) just ends this watch; the caller
            # re-opens it from the last resourceVersion, and a server that is really gone fails that call
            if not _is_transport_error(exc):
                raise
        finally:
            if not finished:  # left mid-stream: this connection must not go back to the pool
                raw.response.close()
            raw.response.release_conn()

    def _send(
        self,
        method: str,
        path: str,
        query: Query | None,
        body: dict | None,
        content_type: str,
        timeout: tuple[float, float],
    ) -> Any:
        try:
            raw = self._client.send(method, path, query or [], body, content_type, timeout)
        except _Status as exc:  # raised by the official transport for some statuses
            raise _error_from(exc.status, exc.body, method, path, self.host) from None
        except Exception as exc:
            if _is_transport_error(exc):
                raise ClusterUnreachable(
                    f"cannot reach the Kubernetes API at {self.host}: {_reason(exc)}"
                ) from None
            raise
        if not 200 <= raw.status <= 299:
            raw.read()
            raise _error_from(raw.status, raw.data, method, path, self.host)
        return raw


# --- transports: (method, path, query, body) -> a response with .status, .read(), .data, .response -----


class _Status(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status, self.body = status, body


class _OfficialTransport:
    """The official client's ApiClient, used only to send (kubeconfig auth, exec plugins, proxies)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    def send(
        self, method: str, path: str, query: list[tuple[str, str]], body: dict | None, content_type: str,
        timeout: tuple[float, float],
    ) -> Any:  # fmt: skip
        from kubernetes.client.exceptions import ApiException

        client = self.api_client
        request = client.param_serialize(
            method,
            path,
            query_params=query,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            return client.call_api(*request, _request_timeout=timeout)
        except ApiException as exc:
            raise _Status(exc.status, exc.body) from None


SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(account_dir: Path | None = None) -> bool:
    """True in a pod with a service account token (what client-go's in-cluster config looks for)."""
    token = Path(account_dir or SERVICE_ACCOUNT_DIR) / "token"
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and token.is_file()


class _Response:
    """A urllib3 response as the official client's RESTResponse looks: ``status``, ``read()``, ``data``."""

    def __init__(self, response: Any) -> None:
        self.response, self.status = response, response.status
        self.data: bytes | None = None

    def read(self) -> bytes:
        data = self.data
        if data is None:
            data = self.data = self.response.data
        return data


class InClusterTransport:
    """The API server as a pod reaches it, without the `kubernetes` package: ``https://`` the
    ``KUBERNETES_SERVICE_HOST:PORT`` Service, verified with the service account's ``ca.crt``, and its token as
    the bearer — re-read for every request, since the kubelet rotates it (bound tokens live an hour)."""

    def __init__(self, account_dir: Path | None = None, *, host: str | None = None) -> None:
        import urllib3

        account_dir = Path(account_dir or SERVICE_ACCOUNT_DIR)
        if host is None:
            address = os.environ.get("KUBERNETES_SERVICE_HOST", "")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not address:
                raise ClusterError("not in a pod: KUBERNETES_SERVICE_HOST is not set")
            host = f"https://{f'[{address}]' if ':' in address else address}:{port}"
        self.host = host
        self._token_path = account_dir / "token"
        ca = account_dir / "ca.crt"
        if not self._token_path.is_file() or not ca.is_file():
            raise ClusterError(f"no service account token and ca.crt in {account_dir}: is the token mounted?")
        # one retry of a failed connection, none of a request the server may have acted on
        retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0, other=0)
        self._pool = urllib3.PoolManager(
            num_pools=1, maxsize=4, cert_reqs="CERT_REQUIRED", ca_certs=str(ca), retries=retries
        )

    def send(
        self, method: str, path: str, query: list[tuple[str, str]], body: dict | None, content_type: str,
        timeout: tuple[float, float],
    ) -> _Response:  # fmt: skip
        import urllib.parse

        import urllib3

        token = self._token_path.read_text().strip()
        url = self.host + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {
            "Accept": "application/json",
            "Content-Type": content_type,
            "Authorization": f"Bearer {token}",
        }
        response = self._pool.request(
            method,
            url,
            body=None if body is None else json.dumps(body).encode(),
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            preload_content=False,
        )
        return _Response(response)


class _Missing(ClusterError):
    """A 404: callers that expect absence (get, delete, discovery) turn it into None/False."""


class _PathGone(_Missing):
    """A 404 that names no object (its Status has no ``details.kind``): the API path itself is not served."""


class _NoKind(ClusterError):
    """Discovery does not list the kind: its CRD (operator) is not installed."""


# --- readiness rules: object -> (state, human-readable progress) ------------------------------------

READY, WAITING, FAILED = "ready", "waiting", "failed"


def _deployment_ready(obj: dict) -> tuple[str, str]:
    """Like `kubectl rollout status`: the new generation observed, every replica updated and ready, no old
    ones left; a rollout past its progressDeadlineSeconds has failed."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = spec.get("replicas", 1)
    ready, updated = status.get("readyReplicas", 0), status.get("updatedReplicas", 0)
    observed = status.get("observedGeneration", 0) >= obj.get("metadata", {}).get("generation", 1)
    if not observed:
        return WAITING, f"waiting for the controller to see generation {obj['metadata'].get('generation')}"
    progressing = _condition(status, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return FAILED, f"{ready}/{want} ready, {progressing.get('message') or 'progress deadline exceeded'}"
    done = ready == want and updated == want and status.get("replicas", want) == want
    return (READY if done else WAITING), f"{ready}/{want} ready" + (
        "" if updated == want else f", {updated}/{want} updated"
    )


def _seldon_ready(obj: dict) -> tuple[str, str]:
    status = obj.get("status") or {}
    state = status.get("state") or "no status yet"
    detail = f" ({status['description']})" if status.get("description") else ""
    verdict = READY if state == "Available" else FAILED if state == "Failed" else WAITING
    return verdict, f"state {state}{detail}"


def _isvc_ready(obj: dict) -> tuple[str, str]:
    """Ready=True for the current generation; Ready=False is not final (KServe keeps retrying)."""
    status = obj.get("status") or {}
    cond = _condition(status, "Ready")
    if cond is None:
        return WAITING, "no Ready condition yet"
    ready = cond.get("status") == "True"
    observed = status.get("observedGeneration", 0) >= obj.get("metadata", {}).get("generation", 1)
    if ready and observed:
        return READY, f"Ready at {status.get('url', '?')}"
    reason = cond.get("reason") or ("waiting for the new generation" if ready else "")
    return WAITING, f"Ready={cond.get('status')}" + (f" ({reason})" if reason else "")


def _condition(status: dict, kind: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


# a container waiting for one of these will not start by waiting longer
_HOPELESS = {
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}
# the runtime's own exit codes for an unreadable spec (2) and a model that cannot load (3): not transient
_FATAL_EXIT = {2: "the spec is unreadable", 3: "a model cannot be loaded"}


def _deployment_pods_failed(cluster: KubeCluster, obj: dict, namespace: str) -> str | None:
    """Why the pods of the Deployment's current template cannot become ready (their own reason, the last
    lines of the failed container's log), or None while they may still come up."""
    spec = obj.get("spec") or {}
    selector = ",".join(
        f"{k}={v}" for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items()
    )
    template = ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    checksum = template.get("wolt-jupyter/spec-checksum")
    if not selector:
        return None
    for pod in cluster.list("v1", "Pod", namespace=namespace, label_selector=selector):
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        if checksum and annotations.get("wolt-jupyter/spec-checksum") != checksum:
            continue  # an old replica, still serving: its state is not this rollout's
        pod_name = pod["metadata"]["name"]
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            last = (status.get("lastState") or {}).get("terminated") or {}
            reason = None
            if waiting.get("reason") in _HOPELESS:
                reason = waiting["reason"] + (f": {waiting['message']}" if waiting.get("message") else "")
            elif last.get("exitCode") in _FATAL_EXIT:
                reason = f"exited with code {last['exitCode']} ({_FATAL_EXIT[last['exitCode']]})"
            if reason is None:
                continue
            tail = cluster.log_tail(pod_name, status["name"], namespace=namespace, previous=bool(last))
            where = f"pod {pod_name} container {status['name']}"
            return f"{where}: {reason}" + (f"; log: {tail}" if tail else "")
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("message"):
                return f"pod {pod_name} cannot be scheduled: {_one_line(cond['message'])}"
    return None


_POD_CHECKS: dict[str, Callable[[KubeCluster, dict, str], str | None]] = {
    "Deployment": _deployment_pods_failed,
}

# the one readiness rule of each workload kind: the wait follows it and the backends' status reads it
READINESS: dict[str, Callable[[dict], tuple[str, str]]] = {
    "Deployment": _deployment_ready,
    "SeldonDeployment": _seldon_ready,
    "InferenceService": _isvc_ready,
}


def readiness_rule(kind: str) -> Callable[[dict], tuple[str, str]] | None:
    """The readiness rule of ``kind``; None: ready once applied (Service, ConfigMap, PodMonitor)."""
    return READINESS.get(kind)


# --- helpers ----------------------------------------------------------------------------------------


def _checked(manifests: list[dict]) -> list[dict]:
    """Reject malformed manifests and bad names before anything is sent."""
    if not isinstance(manifests, list):
        raise InvalidArgument(f"manifests must be a list of dicts, got {type(manifests).__name__}")
    for n, manifest in enumerate(manifests):
        if not isinstance(manifest, dict) or not manifest.get("apiVersion") or not manifest.get("kind"):
            raise InvalidArgument(f"manifest #{n + 1} has no apiVersion/kind: every manifest needs both")
        name = (manifest.get("metadata") or {}).get("name")
        check_dns_label(name, f"{manifest['kind']} name")
    return manifests


def _no_kind(api_version: str, kind: str, host: str) -> str:
    installer = _INSTALLERS.get(api_version.rpartition("/")[0])
    hint = f"is {installer} installed?" if installer else "is its CustomResourceDefinition installed?"
    return f"no kind {kind} in {api_version} at {host}: {hint}"


def _comparable(obj: dict | None) -> dict:
    """What a diff should show: the object without server bookkeeping and status."""
    if obj is None:
        return {}
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in _SERVER_METADATA:
        meta.pop(key, None)
    return out


def _load_client(kubeconfig: str | None, context: str | None) -> Any:
    """kubeconfig (argument, KUBECONFIG, ~/.kube/config) through the official client first; in a pod, the
    in-cluster transport (no `kubernetes` package needed: the runtime image has none).

    One retry only: urllib3's default of three, each with a connect timeout, makes a wrong address hang.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    explicit = kubeconfig is not None or context is not None
    if not explicit and not any(os.path.exists(p) for p in path.split(os.pathsep)):
        if in_cluster():
            return InClusterTransport()
        raise ClusterError(
            "no Kubernetes configuration: pass kubeconfig=..., set KUBECONFIG, create ~/.kube/config "
            "or run inside a cluster"
        )
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise ClusterError(
            f"reading kubeconfig {path} needs the kubernetes package (pip install kubernetes); in a pod, "
            "the service account is used without it"
        ) from None
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = f"context {context!r} in " if context else ""
        raise ClusterError(f"cannot load {where}kubeconfig {path}: {_one_line(str(exc))}") from None
    configuration.retries = 1
    return _OfficialTransport(client.ApiClient(configuration))


def _is_transport_error(exc: BaseException) -> bool:
    import urllib3

    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))


def _reason(exc: BaseException) -> str:
    """`connection refused`, `timed out`, ... from urllib3's nested wrappers (MaxRetryError.reason, causes)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain and len(chain) < 10:
        chain.append(seen)
        inner = getattr(seen, "reason", None)
        seen = inner if isinstance(inner, BaseException) else (seen.__cause__ or seen.__context__)
    for err in chain:
        text = str(err)
        if isinstance(err, ConnectionRefusedError) or "Connection refused" in text:
            return "connection refused"
        if isinstance(err, TimeoutError) or "timed out" in text.lower():
            return "timed out"
        if "Name or service not known" in text or "nodename nor servname" in text:
            return "unknown host"
    return _one_line(str(chain[-1]))


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", "; ", text.strip())


_UNDECLARED = re.compile(
    r"failed to create typed patch object \((?P<object>[^;)]+)[^)]*\): (?P<field>\S+): field not declared in schema"
)
_UNTYPED = re.compile(r"failed to create typed patch object \((?P<object>[^;)]+)[^)]*\): (?P<problem>.+)$")
_RBAC = re.compile(
    r'User "(?P<user>[^"]+)" cannot (?P<verb>\w+) resource "(?P<res>[^"]+)" in API group "(?P<group>[^"]*)"'
    r'(?: in the namespace "(?P<ns>[^"]+)")?'
)


def _error_from(status: int, body: Any, method: str, path: str, host: str) -> ClusterError:
    """A Status answer -> one readable line, prefixed with what kind of failure it is."""
    try:
        doc = json.loads(body) if body else {}
    except (TypeError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    from wolt_jupyter.masking import mask_url

    # an invalid value is quoted back by the API server: a credential in it is shown masked
    message = mask_url(
        _one_line(
            str(
                doc.get("message")
                or (body.decode(errors="replace") if isinstance(body, bytes) else body)
                or ""
            )
        )
    )
    reason = doc.get("reason") or ""
    if status == 403:
        if m := _RBAC.search(message):
            user = m["user"]
            if user.startswith("system:serviceaccount:"):
                user = "serviceaccount " + user.removeprefix("system:serviceaccount:")
            what = m["res"] + (f".{m['group']}" if m["group"] else "")
            where = f"in namespace {m['ns']}" if m["ns"] else "at cluster scope"
            return ClusterError(f"forbidden: {user} cannot {m['verb']} {what} {where}")
        return ClusterError(f"forbidden: {message or f'{method} {path}'}")
    if status == 401:
        return ClusterError(
            f"unauthorized: {host} rejected the credentials in the kubeconfig ({message or 'no detail'})"
        )
    if status == 404:
        # a missing object (or namespace) is named in the Status' details; a path nobody serves is not
        details = doc.get("details")
        if not isinstance(details, dict):
            details = {}
        missing = _Missing if details.get("kind") else _PathGone
        return missing(f"not found: {message or path}")
    if status == 409:
        return ClusterError(f"conflict: {message}")
    if status == 422:
        return ClusterError(f"invalid: {message}")
    if status == 500 and (m := _UNDECLARED.search(message)):
        # kube-apiserver (1.34) answers an apply naming a field its schema lacks with a 500, not a 422
        return ClusterError(f"invalid: {m['object']}: unknown field {m['field']} (not in the kind's schema)")
    if status == 500 and (m := _UNTYPED.search(message)):
        # likewise a value of the wrong type (a string where a CRD's schema says integer)
        return ClusterError(f"invalid: {m['object']}: {m['problem']}")
    kind = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", reason).lower() if reason else f"HTTP {status}"
    return ClusterError(f"{kind}: {message or f'{method} {path}'}")
