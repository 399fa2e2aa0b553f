"""A test Kubernetes API server: the project's one stand-in for kube-apiserver, kept for what the real cluster
(scripts/cluster/cluster.py, tests/cluster/) cannot be made to do on demand: injected API errors (RBAC
denials on a chosen verb, a watch cut mid-stream, an expired resourceVersion, a CRD removed between discovery
and apply, a silent server) and the operators' kinds whose operators do not run there yet (Seldon, KServe:
issue 30). Everything the `kubernetes` target does for real is tested against upstream's kube-apiserver.

It is a small aiohttp server (background thread, 127.0.0.1, free port)
that behaves like the real one where `KubeCluster` and the official client depend on it: discovery, 201 on
create with uid/resourceVersion/generation, `Status` errors, optimistic concurrency, server-side apply with
managedFields and conflicts, merge patches, watches that replay from a resourceVersion and end after
timeoutSeconds, a /status subresource, an optional controller that makes workloads ready, and RBAC denials.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from .fields import (
    MISSING,
    Manager,
    field_set,
    fields_match,
    get_path,
    labels_match,
    managers_of,
    merge_apply,
    merge_patch,
    parse_field_selector,
    parse_label_selector,
    remove_path,
    render_path,
    set_managers,
    strategic_merge_patch,
)
from .kinds import BUILTIN_TYPES, CRD_GROUPS, CRD_TYPES, ApiError, ResourceType, not_found, not_served, now
from .statuses import deployment_status, isvc_status, seldon_status

# a workload carrying this label never becomes ready under the controller (for timeout tests)
NEVER_READY_LABEL = "wolt-test/never-ready"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


@dataclass
class _Watcher:
    rtype: ResourceType
    namespace: str | None
    labels: list
    fields: list
    queue: asyncio.Queue

    def wants(self, obj: dict) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return labels_match(meta.get("labels") or {}, self.labels) and fields_match(obj, self.fields)


Key = tuple[str, str, str, str]  # group, plural, namespace, name


class TestApiServer:
    """The server. Start it with `start()` (or use it as a context manager); tweak behaviour with the knobs.

    Knobs (safe to set from the test thread): `controller` (make workloads ready), `ready_delay` (seconds per
    controller step), `never_ready` (names that never become ready), `failing` (names whose rollout fails:
    ProgressDeadlineExceeded, Seldon state Failed), `forbid(verb, resource)` (RBAC 403), `watch_cap`.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        crd_groups: Iterable[str] = CRD_GROUPS,
        controller: bool = False,
        ready_delay: float = 0.1,
        user: str = "system:serviceaccount:default:wolt-jupyter",
        token: str | None = None,
        strict_namespaces: bool = False,
    ) -> None:
        """`token`: demand `Authorization: Bearer <token>` (401 otherwise). `strict_namespaces`: creating in a
        namespace that has no Namespace object is a 404, as on a real cluster (only "default" exists)."""
        groups = set(crd_groups)
        self.types = [*BUILTIN_TYPES, *(t for t in CRD_TYPES if t.group in groups)]
        self.controller = controller
        self.ready_delay = ready_delay
        self.user = user
        self.token = token
        self.strict_namespaces = strict_namespaces
        self.never_ready: set[str] = set()
        self.failing: set[str] = set()
        # real servers end every watch after a while (--min-request-timeout): cap timeoutSeconds to test re-watch
        self.watch_cap: float | None = None
        self.requests: list[tuple[str, str]] = []  # (method, path?query), to assert how a client talked
        self._forbidden: set[tuple[str, str, str | None]] = set()
        self._objects: dict[Key, dict] = {}
        self._events: list[tuple[int, ResourceType, str, dict]] = []
        self._watchers: list[_Watcher] = []
        self._rv = 1000
        self._compacted = 0  # watches from an older resourceVersion get 410 Expired, as after etcd compaction
        self._ip = 10
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TestApiServer:
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, errors), daemon=True, name="kube-api")
        self._thread.start()
        if not ready.wait(10) or errors:
            raise RuntimeError(f"test API server did not start: {errors}")
        return self

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            app = web.Application(client_max_size=8 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            for w in self._watchers:
                w.queue.put_nowait(None)
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> TestApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_client(self) -> Any:
        """An official-client ApiClient pointing at this server (plain HTTP, no auth)."""
        from kubernetes import client

        return client.ApiClient(client.Configuration(host=self.url))

    def write_kubeconfig(self, path: Path, *, context: str = "test", namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "test-token"}}],
            "contexts": [
                {"name": context, "context": {"cluster": "test", "user": "test", "namespace": namespace}}
            ],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # --- knobs and inspection (thread-safe: they run on the server's loop) -------------------------

    def forbid(self, verb: str, resource: str, namespace: str | None = None) -> None:
        """Deny `verb` ("*" for all) on a resource plural (e.g. "deployments") with a 403 like RBAC's."""
        self._forbidden.add((verb, resource, namespace))

    def allow_all(self) -> None:
        self._forbidden.clear()

    def _call(self, fn: Callable[[], Any]) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def get_object(self, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
        rtype = self._type_of(api_version, kind)
        obj = self._call(lambda: self._objects.get(self._key(rtype, namespace, name)))
        return copy.deepcopy(obj)

    def set_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict) -> None:
        """Replace an object's status, as a controller would (bumps resourceVersion, sends MODIFIED)."""
        rtype = self._type_of(api_version, kind)
        self._call(lambda: self._write_status(rtype, self._key(rtype, namespace, name), status))

    def compact(self) -> None:
        """Forget the event history, like etcd compaction: older resourceVersions can no longer be watched."""

        def run() -> None:
            self._events.clear()
            self._compacted = self._rv

        self._call(run)

    def _type_of(self, api_version: str, kind: str) -> ResourceType:
        for t in (*BUILTIN_TYPES, *CRD_TYPES):
            if t.group_version == api_version and t.kind == kind:
                return t
        raise KeyError(f"{kind} in {api_version}")

    @staticmethod
    def _key(rtype: ResourceType, namespace: str | None, name: str) -> Key:
        return (rtype.group, rtype.plural, namespace or "", name)

    # --- HTTP ---------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        try:
            if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            return await self._dispatch(request)
        except ApiError as err:
            return web.json_response(err.body(), status=err.code)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segs = [s for s in request.path.split("/") if s]
        if segs == ["version"]:
            return web.json_response(
                {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}
            )
        if segs == ["api"]:
            return web.json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                    ],
                }
            )
        if segs == ["apis"]:
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [self._group_doc(g) for g in self._groups()],
                }
            )
        if len(segs) >= 2 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 2 and segs[0] == "apis":
            group = segs[1]
            if len(segs) == 2:
                if group not in self._groups():
                    raise not_served()
                return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group)})
            version, rest = segs[2], segs[3:]
        else:
            raise not_served()
        served = [t for t in self.types if t.group == group and t.version == version]
        if not served:
            raise not_served()
        if not rest:
            return web.json_response(self._resource_list(group, version, served))
        return await self._resource_request(request, served, rest)

    def _groups(self) -> list[str]:
        return sorted({t.group for t in self.types if t.group})

    def _group_doc(self, group: str) -> dict:
        versions = sorted({t.version for t in self.types if t.group == group})
        docs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": docs, "preferredVersion": docs[0]}

    @staticmethod
    def _resource_list(group: str, version: str, served: list[ResourceType]) -> dict:
        resources = []
        for t in served:
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.kind.lower(),
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": [*_VERBS, "deletecollection"],
                }
            )
            if t.status:
                resources.append(
                    {
                        "name": f"{t.plural}/status",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    async def _resource_request(
        self, request: web.Request, served: list[ResourceType], rest: list[str]
    ) -> web.StreamResponse:
        namespace = None
        # /namespaces/{ns}/{plural}/... is a namespaced path; /namespaces/{name}[/status] is a Namespace
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = (
            rest[0],
            (rest[1] if len(rest) > 1 else None),
            (rest[2] if len(rest) > 2 else None),
        )
        rtype = next((t for t in served if t.plural == plural), None)
        if rtype is None or len(rest) > 3 or (rtype.namespaced is False and namespace is not None):
            raise not_served()
        if rtype.namespaced and name is not None and namespace is None:
            raise not_served()
        if sub is not None and (sub != "status" or not rtype.status):
            raise not_served()
        query = request.query
        watching = query.get("watch") in ("true", "1")
        verb = {
            "GET": "watch" if watching else ("get" if name else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(request.method)
        if verb is None:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        self._authorize(verb, rtype, namespace, name, sub)
        dry_run = query.get("dryRun") == "All"
        if request.method == "GET":
            if watching:
                return await self._watch(request, rtype, namespace)
            if name is None:
                return web.json_response(self._list(rtype, namespace, query))
            return web.json_response(self._get(rtype, namespace, name))
        if request.method == "POST" and name is None and sub is None:
            body = await _json_body(request)
            return web.json_response(
                self._create(rtype, namespace, body, query, _manager(request), dry_run), status=201
            )
        if request.method == "PUT" and name is not None:
            body = await _json_body(request)
            return web.json_response(
                self._update(rtype, namespace, name, sub, body, _manager(request), dry_run)
            )
        if request.method == "PATCH" and name is not None:
            return await self._patch(request, rtype, namespace, name, sub, dry_run)
        if request.method == "DELETE" and name is not None and sub is None:
            return web.json_response(self._delete(rtype, namespace, name, dry_run))
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _authorize(
        self, verb: str, rtype: ResourceType, ns: str | None, name: str | None, sub: str | None
    ) -> None:
        resource = rtype.plural + (f"/{sub}" if sub else "")
        denied = any(
            v in (verb, "*") and r in (resource, "*") and n in (ns, None)  # "x/status" is its own resource
            for v, r, n in self._forbidden
        )
        if not denied:
            return
        subject = f'{rtype.qualified} "{name}"' if name else rtype.qualified
        where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
        message = (
            f'{subject} is forbidden: User "{self.user}" cannot {verb} resource "{resource}" '
            f'in API group "{rtype.group}"{where}'
        )
        details = {"group": rtype.group, "kind": rtype.plural, **({"name": name} if name else {})}
        raise ApiError(403, "Forbidden", message, details)

    # --- reads --------------------------------------------------------------------------------------

    def _get(self, rtype: ResourceType, ns: str | None, name: str) -> dict:
        obj = self._objects.get(self._key(rtype, ns, name))
        if obj is None:
            raise not_found(rtype, name)
        return obj

    def _list(self, rtype: ResourceType, ns: str | None, query: Any) -> dict:
        labels, fields = _selectors(query)
        items = [
            obj
            for (g, p, n, _), obj in sorted(self._objects.items())
            if (g, p) == (rtype.group, rtype.plural)
            and (ns is None or n == ns)
            and labels_match(obj["metadata"].get("labels") or {}, labels)
            and fields_match(obj, fields)
        ]
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.group_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    async def _watch(self, request: web.Request, rtype: ResourceType, ns: str | None) -> web.StreamResponse:
        query = request.query
        labels, fields = _selectors(query)
        try:
            timeout = float(query.get("timeoutSeconds", "1800"))
            since = (
                int(query["resourceVersion"]) if query.get("resourceVersion") not in (None, "", "0") else None
            )
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid watch parameter: {exc}") from exc
        if self.watch_cap is not None:
            timeout = min(timeout, self.watch_cap)
        watcher = _Watcher(rtype, ns, labels, fields, asyncio.Queue())
        expired = since is not None and since < self._compacted
        if since is None:  # no resourceVersion: the current state first, as synthetic ADDED events
            backlog = [
                ("ADDED", obj)
                for (g, p, _, _), obj in sorted(self._objects.items())
                if (g, p) == (rtype.group, rtype.plural) and watcher.wants(obj)
            ]
        else:
            backlog = [
                (etype, obj)
                for rv, t, etype, obj in self._events
                if rv > since and t == rtype and watcher.wants(obj)
            ]
        self._watchers.append(watcher)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if expired:
                gone = ApiError(
                    410, "Expired", f"too old resource version: {since} ({self._compacted})"
                ).body()
                await response.write(_event_line("ERROR", gone))
                await response.write_eof()
                return response
            for etype, obj in backlog:
                await response.write(_event_line(etype, obj))
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                if item is None:
                    break
                await response.write(_event_line(*item))
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.remove(watcher)
        return response

    # --- writes -------------------------------------------------------------------------------------

    def _check_identity(
        self, rtype: ResourceType, ns: str | None, body: Any, name: str | None, *, typed: bool = False
    ) -> dict:
        """Check apiVersion/kind/name/namespace against the URL. Plain writes may omit apiVersion and kind
        (the endpoint implies them); an apply must carry them, as on the real server."""
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        if not typed:
            body.setdefault("apiVersion", rtype.group_version)
            body.setdefault("kind", rtype.kind)
        if body.get("apiVersion") != rtype.group_version or body.get("kind") != rtype.kind:
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({body.get('apiVersion')}) and kind "
                f"({body.get('kind')}) do not match the expected {rtype.group_version} {rtype.kind}",
            )
        meta = body.setdefault("metadata", {})
        if name is not None:
            if meta.get("name", name) != name:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"the name of the object ({meta.get('name')}) does not match "
                    f"the name on the URL ({name})",
                )
            meta["name"] = name
        if meta.get("namespace", ns) != ns and rtype.namespaced:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if rtype.namespaced:
            meta["namespace"] = ns
        obj_name = meta.get("name")
        if not obj_name:
            raise ApiError(
                422,
                "Invalid",
                f'{rtype.kind} "" is invalid: metadata.name: Required value: name or '
                "generateName is required",
            )
        if len(obj_name) > 253 or not _DNS_SUBDOMAIN.match(obj_name):
            raise ApiError(
                422,
                "Invalid",
                f'{rtype.kind} "{obj_name}" is invalid: metadata.name: Invalid value: '
                f'"{obj_name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                {"name": obj_name, "group": rtype.group, "kind": rtype.kind},
            )
        return body

    def _create(
        self, rtype: ResourceType, ns: str | None, body: Any, query: Any, manager: str, dry_run: bool
    ) -> dict:
        meta = body.get("metadata", {}) if isinstance(body, dict) else {}
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        body = self._check_identity(rtype, ns, body, None)
        self._check_namespace(ns)
        key = self._key(rtype, ns, body["metadata"]["name"])
        if key in self._objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rtype.qualified} "{key[3]}" already exists',
                {"name": key[3], "group": rtype.group, "kind": rtype.plural},
            )
        obj = self._fresh(rtype, body)
        managers = [
            Manager(
                query.get("fieldManager") or manager,
                "Update",
                rtype.group_version,
                now(),
                field_set(obj, assoc=rtype.builtin),
            )
        ]
        set_managers(obj, managers, [])
        return self._commit(rtype, key, None, obj, dry_run)

    def _check_namespace(self, ns: str | None) -> None:
        if not self.strict_namespaces or ns is None or ns == "default":
            return
        if ("", "namespaces", "", ns) not in self._objects:
            raise ApiError(
                404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
            )

    def _fresh(self, rtype: ResourceType, body: dict) -> dict:
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        for server_owned in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            meta.pop(server_owned, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if rtype.status:  # the status subresource is the controller's: a new object starts with none
            obj["status"] = {}
        return obj

    def _update(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        sub: str | None,
        body: Any,
        manager: str,
        dry_run: bool,
    ) -> dict:
        body = self._check_identity(rtype, ns, body, name)
        key = self._key(rtype, ns, name)
        old = self._objects.get(key)
        if old is None:
            raise not_found(rtype, name)
        self._check_version(rtype, old, body)
        return self._replace(rtype, key, old, body, sub, manager, dry_run)

    def _check_version(self, rtype: ResourceType, old: dict, body: dict) -> None:
        sent = body.get("metadata", {}).get("resourceVersion")
        if sent and sent != old["metadata"]["resourceVersion"]:
            name = old["metadata"]["name"]
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the '
                "object has been modified; please apply your changes to the latest version and try again",
                {"name": name, "group": rtype.group, "kind": rtype.plural},
            )

    def _replace(
        self,
        rtype: ResourceType,
        key: Key,
        old: dict,
        new: dict,
        sub: str | None,
        manager: str,
        dry_run: bool,
    ) -> dict:
        """Finish a PUT or merge PATCH: keep identity and the other half (spec vs status), record ownership."""
        if sub == "status":
            obj = copy.deepcopy(old)
            if "status" in new:
                obj["status"] = copy.deepcopy(new["status"])
            else:
                obj.pop("status", None)
            return self._commit(rtype, key, old, obj, dry_run)
        obj = copy.deepcopy(new)
        meta = obj["metadata"]
        for kept in ("uid", "creationTimestamp", "generation", "resourceVersion", "managedFields"):
            if kept in old["metadata"]:
                meta[kept] = copy.deepcopy(old["metadata"][kept])
        if rtype.status:
            obj.pop("status", None)
            if "status" in old:
                obj["status"] = copy.deepcopy(old["status"])
        before = managers_of(old)
        managers = copy.deepcopy(before)
        old_fields, new_fields = field_set(old, assoc=rtype.builtin), field_set(obj, assoc=rtype.builtin)
        changed = {p for p in new_fields if get_path(old, p) != get_path(obj, p)}
        removed = old_fields - new_fields
        for m in managers:
            m.fields -= changed | removed
        mine = next((m for m in managers if (m.manager, m.operation) == (manager, "Update")), None)
        if mine is None and changed:
            mine = Manager(manager, "Update", rtype.group_version, now())
            managers.append(mine)
        if mine is not None:
            mine.fields |= changed
            mine.time = now()
        set_managers(obj, managers, before)
        return self._commit(rtype, key, old, obj, dry_run)

    async def _patch(
        self,
        request: web.Request,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        sub: str | None,
        dry_run: bool,
    ) -> web.StreamResponse:
        ctype = request.content_type
        raw = await request.text()
        try:
            patch = yaml.safe_load(raw) if ctype == "application/apply-patch+yaml" else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"error decoding patch: {exc}") from exc
        key = self._key(rtype, ns, name)
        old = self._objects.get(key)
        if ctype == "application/apply-patch+yaml":
            created = old is None
            obj = self._apply(rtype, ns, name, sub, patch, request.query, old, dry_run)
            return web.json_response(
                obj, status=201 if created else 200
            )  # dry runs too, as on the real server
        if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - "
                "accepted media types include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml",
            )
        if ctype == "application/strategic-merge-patch+json" and not rtype.builtin:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "strategic merge patch is not supported for custom "
                "resources: use application/merge-patch+json or server-side apply",
            )
        if old is None:
            raise not_found(rtype, name)
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        merge = merge_patch if ctype == "application/merge-patch+json" else strategic_merge_patch
        self._check_version(rtype, old, patch)
        new = merge(old, patch)
        new.setdefault("metadata", {})
        new["metadata"].pop("resourceVersion", None)
        self._check_identity(rtype, ns, new, name)
        manager = request.query.get("fieldManager") or _manager(request)
        return web.json_response(self._replace(rtype, key, old, new, sub, manager, dry_run))

    def _apply(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        sub: str | None,
        applied: Any,
        query: Any,
        old: dict | None,
        dry_run: bool,
    ) -> dict:
        """Server-side apply: merge, own the applied fields, drop fields this manager stopped applying."""
        manager = query.get("fieldManager")
        if not manager:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch",
            )
        applied = self._check_identity(rtype, ns, applied, name, typed=True)
        meta = applied["metadata"]
        if meta.get("managedFields"):
            raise ApiError(400, "BadRequest", "metadata.managedFields must be nil")
        if old is not None:
            self._check_version(rtype, old, applied)
        for server_owned in ("resourceVersion", "uid", "creationTimestamp", "generation"):
            meta.pop(server_owned, None)
        if sub == "status":
            if old is None:
                raise not_found(rtype, name)
            base = old
            applied = {"status": applied.get("status", {})}
        else:
            if old is None:
                self._check_namespace(ns)
            base = old or self._fresh(rtype, {"metadata": {"name": name}})
            if rtype.status:
                applied.pop("status", None)
        assoc = rtype.builtin
        before = managers_of(old)
        managers = copy.deepcopy(before)
        new_fields = field_set(applied, assoc=assoc)
        mine = next((m for m in managers if (m.manager, m.operation) == (manager, "Apply")), None)
        conflicts = [
            (m, p)
            for m in managers
            if m is not mine
            for p in sorted(new_fields & m.fields)
            if not p[-1].startswith("k:") and get_path(base, p) != get_path(applied, p)
        ]
        if conflicts and query.get("force") not in ("true", "1"):
            raise _apply_conflict(rtype, name, conflicts)
        for m, p in conflicts:
            m.fields.discard(p)
        obj = merge_apply(base, applied, assoc=assoc)
        if old is None:
            obj["metadata"].update(
                {k: v for k, v in base["metadata"].items() if k in ("uid", "creationTimestamp", "generation")}
            )
        if mine is None:
            mine = Manager(manager, "Apply", rtype.group_version, now())
            managers.append(mine)
        if sub != "status":
            others = set().union(*(m.fields for m in managers if m is not mine))
            for path in sorted(mine.fields - new_fields, key=len):  # whole list items before their leaves
                if path not in others and get_path(obj, path) is not MISSING:
                    remove_path(obj, path)
            mine.fields = new_fields
            mine.time = now()
        set_managers(obj, managers, before)
        return self._commit(rtype, self._key(rtype, ns, name), old, obj, dry_run)

    def _delete(self, rtype: ResourceType, ns: str | None, name: str, dry_run: bool) -> dict:
        key = self._key(rtype, ns, name)
        obj = self._objects.get(key)
        if obj is None:
            raise not_found(rtype, name)
        if not dry_run:
            del self._objects[key]
            self._rv += 1
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._publish(rtype, "DELETED", gone)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": rtype.group,
                "kind": rtype.plural,
                "uid": obj["metadata"]["uid"],
            },
        }

    def _commit(self, rtype: ResourceType, key: Key, old: dict | None, obj: dict, dry_run: bool) -> dict:
        """Store a new state: bump generation on spec changes, skip no-ops, bump resourceVersion, notify."""
        self._default(rtype, obj, old)
        if old is not None:
            obj["metadata"]["generation"] = old["metadata"].get("generation", 1) + (_spec(obj) != _spec(old))
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if obj == old:  # the real server does not write (nor bump resourceVersion) on a no-op
                return old
        if dry_run:
            return obj
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[key] = obj
        self._publish(rtype, "ADDED" if old is None else "MODIFIED", obj)
        if old is None or obj["metadata"]["generation"] != old["metadata"].get("generation"):
            self._schedule(rtype, key, obj["metadata"]["generation"], 1)
        return obj

    def _default(self, rtype: ResourceType, obj: dict, old: dict | None) -> None:
        """A few of the real server's defaults, enough that live objects differ from manifests as they do."""
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        if rtype.kind == "Deployment":
            spec.setdefault("replicas", 1)
            for c in spec.get("template", {}).get("spec", {}).get("containers", []):
                for port in c.get("ports", []):
                    port.setdefault("protocol", "TCP")
        if rtype.kind == "Service":
            spec.setdefault("type", "ClusterIP")
            if "clusterIP" not in spec:
                previous = (old or {}).get("spec", {}).get("clusterIP")
                if previous is None:
                    self._ip += 1
                spec["clusterIP"] = previous or f"10.96.0.{self._ip}"
            for port in spec.get("ports", []):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))

    def _publish(self, rtype: ResourceType, etype: str, obj: dict) -> None:
        snapshot = copy.deepcopy(obj)
        self._events.append((int(snapshot["metadata"]["resourceVersion"]), rtype, etype, snapshot))
        for w in self._watchers:
            if w.rtype == rtype and w.wants(snapshot):
                w.queue.put_nowait((etype, snapshot))

    # --- the controller -----------------------------------------------------------------------------

    def _schedule(self, rtype: ResourceType, key: Key, generation: int, step: int) -> None:
        if self.controller and rtype.kind in ("Deployment", "SeldonDeployment", "InferenceService"):
            assert self._loop is not None
            self._loop.call_later(self.ready_delay, self._reconcile, rtype, key, generation, step)

    def _reconcile(self, rtype: ResourceType, key: Key, generation: int, step: int) -> None:
        obj = self._objects.get(key)
        if obj is None or obj["metadata"].get("generation") != generation:
            return  # deleted or superseded by a newer spec, which has its own schedule
        meta = obj["metadata"]
        stuck = (
            meta["name"] in self.never_ready or (meta.get("labels") or {}).get(NEVER_READY_LABEL) == "true"
        )
        name, ns = meta["name"], meta.get("namespace", "")
        failed = name in self.failing
        stuck = stuck or failed
        if rtype.kind == "Deployment":
            replicas = obj["spec"].get("replicas", 1)
            ready = 0 if stuck else min(step, replicas)
            status = deployment_status(name, generation, replicas, ready, deadline_exceeded=failed)
            self._write_status(rtype, key, status)
            if not stuck and ready < replicas:
                self._schedule(rtype, key, generation, step + 1)
        elif rtype.kind == "SeldonDeployment":
            available = not stuck and step >= 2
            status = seldon_status(name, ns, available=available, failed=failed)
            self._write_status(rtype, key, status)
            if not stuck and not available:
                self._schedule(rtype, key, generation, step + 1)
        elif rtype.kind == "InferenceService":
            self._write_status(rtype, key, isvc_status(name, ns, generation, ready=not stuck))

    def _write_status(self, rtype: ResourceType, key: Key, status: dict) -> None:
        old = self._objects.get(key)
        if old is None:
            return
        obj = copy.deepcopy(old)
        obj["status"] = status
        self._commit(rtype, key, old, obj, False)


def _spec(obj: dict) -> dict:
    """What counts for metadata.generation: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _event_line(etype: str, obj: dict) -> bytes:
    return (json.dumps({"type": etype, "object": obj}) + "\n").encode()


def _manager(request: web.Request) -> str:
    """The default field manager of an update: the user agent's product name, as on the real server."""
    return request.query.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.text())
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: {exc}") from exc


def _selectors(query: Any) -> tuple[list, list]:
    try:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
    except ValueError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from exc
    return labels, fields


def _apply_conflict(rtype: ResourceType, name: str, conflicts: list[tuple[Manager, tuple]]) -> ApiError:
    causes = [
        {"reason": "FieldManagerConflict", "message": f'conflict with "{m.manager}"', "field": render_path(p)}
        for m, p in conflicts
    ]
    if len(conflicts) == 1:
        m, p = conflicts[0]
        text = f'Apply failed with 1 conflict: conflict with "{m.manager}" using {rtype.group_version}: {render_path(p)}'
    else:
        lines = "\n".join(f'- conflict with "{m.manager}": {render_path(p)}' for m, p in conflicts)
        text = f"Apply failed with {len(conflicts)} conflicts:\n{lines}"
    return ApiError(
        409, "Conflict", text, {"name": name, "group": rtype.group, "kind": rtype.plural, "causes": causes}
    )
