"""A small Kubernetes API server for tests: the real API's JSON for the subset we use.

No kube-apiserver runs here, so this stdlib HTTP server (127.0.0.1, a free port) speaks the
wire format of the real one for:

- apps/v1 deployments: get, list, watch, create, update, delete; `scale` subresource (get,
  patch, update); `status` subresource;
- core/v1 nodes and pods: get, list, watch (labelSelector, fieldSelector basics), create,
  update, delete; core/v1 events: create, list;
- coordination.k8s.io/v1 leases: get, create, update (PUT), delete;
- gpuautoscaler.io/v1alpha1 autoscalingpolicies: get, list, watch, create, update, delete and
  the `status` subresource (patch, update).

Semantics kept from the real server: one global resourceVersion counter, bumped on every
write (a no-op patch writes nothing); `metadata.resourceVersion` in a PUT or a patch body is
a precondition (409 Conflict on mismatch); `metadata.generation` counts spec changes; writes
to an object with a `status` subresource leave status alone, and status writes leave the rest;
errors are `Status` objects (NotFound 404, AlreadyExists/Conflict 409, Invalid 422,
UnsupportedMediaType 415, InternalError 500, Expired 410); watches are chunked JSON lines of
ADDED/MODIFIED/DELETED events that end after `timeoutSeconds`, resume from a resourceVersion,
send an ERROR event with a 410 Status when that version was compacted away, and send a
BOOKMARK before ending when `allowWatchBookmarks` is set.

Patches: JSON merge patch, JSON patch (add, remove, replace, test) and strategic merge patch,
the last applied as a JSON merge patch (lists replace, no merge keys), which is exact for the
scale and status fields we patch; custom resources reject it with 415 as the real server does;
the scale subresource takes merge patches only.

Simplifications: list `limit` is ignored
(the API allows that); a watch filters events by the object's current labels (no synthetic
DELETED when an object stops matching).

Test hooks, as Karpenter's fake cloud provider has them: `inject` queues the next N errors or
delays for a verb and resource (optionally after applying the write, for "the patch landed but
the reply was a 500"), `requests` is the log of every call as RBAC sees it, `compact` expires
watch history (clients that resume get 410), `close_watches` ends every open watch, and
`put`/`remove` change objects from the side, as other controllers would.
"""

from __future__ import annotations

import bisect
import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import urllib3
from kubernetes import client

JSON = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    """One served resource: group/version/plural, its kind and what subresources it has."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`deployments.apps` style, as Status messages name resources."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: tuple[Resource, ...] = (
    Resource("apps", "v1", "deployments", "Deployment", True, frozenset({"scale", "status"})),
    Resource("", "v1", "nodes", "Node", False, frozenset({"status"})),
    Resource("", "v1", "pods", "Pod", True, frozenset({"status"})),
    Resource("", "v1", "events", "Event", True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource(
        "gpuautoscaler.io",
        "v1alpha1",
        "autoscalingpolicies",
        "AutoscalingPolicy",
        True,
        frozenset({"status"}),
        custom=True,
    ),
)
_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}
_BY_PLURAL = {r.plural: r for r in RESOURCES}


@dataclass
class Request:
    """One call as the API server saw it, named the way RBAC names it."""

    method: str
    path: str
    query: dict[str, str]
    verb: str  # get, list, watch, create, update, patch, delete
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    content_type: str
    body: Any
    status: int = 0

    @property
    def call(self) -> tuple[str, str, str, str]:
        """(apiGroup, resource, subresource, verb), the shape of a ClusterRole rule."""
        return (self.group, self.resource, self.subresource, self.verb)


@dataclass
class Fault:
    """A queued error or delay for matching requests (consumed `times` times)."""

    verb: str
    resource: str
    subresource: str = ""
    name: str | None = None
    code: int | None = 500
    delay_s: float = 0.0
    times: int = 1
    after_apply: bool = False
    message: str = "injected failure"

    def matches(self, req: Request) -> bool:
        return (
            self.verb == req.verb
            and self.resource == req.resource
            and self.subresource == req.subresource
            and (self.name is None or self.name == req.name)
        )


class ApiError(Exception):
    """Raised inside handlers; becomes a Status response."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}


def status_object(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    """A metav1.Status as the real API server returns it for a failure."""
    out: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        out["details"] = details
    return out


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (null deletes a key; lists and scalars replace)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _json_patch_error(message: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request: {message}")


def json_patch(doc: Any, ops: list[Any]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace and test operations."""
    out = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _json_patch_error(f"malformed operation {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "test":
            cur: Any = out
            for p in parts:
                if isinstance(cur, dict) and p in cur:
                    cur = cur[p]
                elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
                    cur = cur[int(p)]
                else:
                    raise _json_patch_error(f"test: missing path {op['path']}")
            if cur != op.get("value"):
                raise _json_patch_error(f"test: {op['path']} is {cur!r}, not {op.get('value')!r}")
            continue
        if kind not in ("add", "replace", "remove"):
            raise _json_patch_error(f"unsupported operation {kind!r}")
        if not parts:
            if kind == "remove":
                raise _json_patch_error("cannot remove the root")
            out = copy.deepcopy(op.get("value"))
            continue
        parent: Any = out
        for p in parts[:-1]:
            if isinstance(parent, dict) and p in parent:
                parent = parent[p]
            elif isinstance(parent, list) and p.isdigit() and int(p) < len(parent):
                parent = parent[int(p)]
            else:
                raise _json_patch_error(f"{kind}: missing path {op['path']}")
        last = parts[-1]
        if isinstance(parent, dict):
            if kind != "add" and last not in parent:
                raise _json_patch_error(f"{kind}: missing path {op['path']}")
            if kind == "remove":
                del parent[last]
            else:
                parent[last] = copy.deepcopy(op.get("value"))
        elif isinstance(parent, list):
            if last == "-" and kind == "add":
                parent.append(copy.deepcopy(op.get("value")))
                continue
            if not last.isdigit() or int(last) > len(parent) - (0 if kind == "add" else 1):
                raise _json_patch_error(f"{kind}: bad index in {op['path']}")
            i = int(last)
            if kind == "add":
                parent.insert(i, copy.deepcopy(op.get("value")))
            elif kind == "replace":
                parent[i] = copy.deepcopy(op.get("value"))
            else:
                del parent[i]
        else:
            raise _json_patch_error(f"{kind}: {op['path']} is not in an object or a list")
    return out


# -- selectors ---------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """`a=b,c!=d,e in (x,y),f notin (z),g,!h` against a label map."""
    for term in _split_selector(selector):
        m = _SET_RE.match(term)
        if m:
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in" and labels.get(key) not in vals:
                return False
            if op == "notin" and key in labels and labels[key] in vals:
                return False
            continue
        if term.startswith("!"):
            if term[1:].strip() in labels:
                return False
            continue
        for op in ("!=", "==", "="):
            if op in term:
                key, val = (s.strip() for s in term.split(op, 1))
                if op == "!=":
                    if labels.get(key) == val:
                        return False
                elif labels.get(key) != val:
                    return False
                break
        else:
            if term not in labels:
                return False
    return True


def _field_value(obj: JSON, path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    return "" if cur is None else str(cur)


def field_selector_matches(selector: str, obj: JSON) -> bool:
    """`spec.nodeName=x,status.phase!=Running,metadata.name==y` against an object."""
    for term in _split_selector(selector):
        for op in ("!=", "==", "="):
            if op in term:
                path, val = (s.strip() for s in term.split(op, 1))
                got = _field_value(obj, path)
                if (got == val) != (op != "!="):
                    return False
                break
        else:
            raise ApiError(400, "BadRequest", f"invalid field selector term {term!r}")
    return True


# -- the store ------------------------------------------------------------------------------


@dataclass
class _WatchEvent:
    rv: int
    type: str
    obj: JSON


@dataclass
class _Store:
    rv: int = 0
    objects: dict[str, dict[tuple[str, str], JSON]] = field(default_factory=dict)
    history: dict[str, list[_WatchEvent]] = field(default_factory=dict)
    history_rvs: dict[str, list[int]] = field(default_factory=dict)
    # Watches that resume from a resourceVersion below the floor get 410 Gone.
    floor: dict[str, int] = field(default_factory=dict)


def _spec_of(obj: JSON) -> str:
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    return json.dumps(rest, sort_keys=True)


class KubeAPIServer:
    """The test API server. Use as a context manager; `url` is `http://127.0.0.1:PORT`."""

    def __init__(self, history_limit: int = 10_000, default_watch_timeout_s: float = 60.0):
        self.history_limit = history_limit
        self.default_watch_timeout_s = default_watch_timeout_s
        self._cond = threading.Condition()
        self._store = _Store()
        self._faults: list[Fault] = []
        self._requests: list[Request] = []
        self._watch_epoch = 0
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.api = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> KubeAPIServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_client(self, **config: Any) -> client.ApiClient:
        """A real `kubernetes` ApiClient pointed at this server.

        Read errors are not retried by urllib3 (the adapters retry, bounded), connection
        errors are retried twice."""
        cfg = client.Configuration(host=self.url)
        cfg.retries = urllib3.Retry(total=None, connect=2, read=0, redirect=0, status=0, other=0)
        for k, v in config.items():
            setattr(cfg, k, v)
        return client.ApiClient(configuration=cfg)

    # -- test hooks -------------------------------------------------------------------------

    def inject(
        self,
        verb: str,
        resource: str,
        *,
        subresource: str = "",
        name: str | None = None,
        code: int | None = 500,
        times: int = 1,
        delay_s: float = 0.0,
        after_apply: bool = False,
        message: str = "injected failure",
    ) -> None:
        """Queue a fault for the next `times` matching requests.

        `code=None` with `delay_s` only slows the request down (it is still served, so a
        write delayed past the client's timeout lands anyway). `after_apply=True` serves the
        write and then answers `code` instead of the result."""
        if verb not in ("get", "list", "watch", "create", "update", "patch", "delete"):
            raise ValueError(f"unknown verb {verb!r}")
        if resource not in _BY_PLURAL:
            raise ValueError(f"unknown resource {resource!r}; served: {sorted(_BY_PLURAL)}")
        with self._cond:
            self._faults.append(
                Fault(verb, resource, subresource, name, code, delay_s, times, after_apply, message)
            )

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._cond:
            self._faults.clear()

    @property
    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._requests)

    def calls(self) -> set[tuple[str, str, str, str]]:
        """Every distinct (apiGroup, resource, subresource, verb) served so far."""
        return {r.call for r in self.requests}

    def clear_requests(self) -> None:
        with self._cond:
            self._requests.clear()

    def count(self, verb: str, resource: str, subresource: str = "") -> int:
        return sum(
            1
            for r in self.requests
            if r.verb == verb and r.resource == resource and r.subresource == subresource
        )

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._store.rv

    def compact(self) -> None:
        """Forget all watch history: a watch resuming from an older version gets 410 Gone."""
        with self._cond:
            self._store.rv += 1
            for plural in _BY_PLURAL:
                self._store.history[plural] = []
                self._store.history_rvs[plural] = []
                self._store.floor[plural] = self._store.rv
            self._cond.notify_all()

    def close_watches(self) -> None:
        """Drop every open watch stream, as a restarting API server would: no BOOKMARK is
        sent, so clients resume from the last object version they saw."""
        with self._cond:
            self._watch_epoch += 1
            self._cond.notify_all()

    def put(self, obj: JSON) -> JSON:
        """Create or replace an object from the side (no preconditions); emits a watch event."""
        res = _BY_KIND.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        if res is None:
            raise ValueError(
                f"unsupported apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')}"
            )
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace", "default") if res.namespaced else ""
        with self._cond:
            old = self._store.objects.get(res.plural, {}).get((ns, meta.get("name", "")))
            if old is None:
                return self._create(res, ns, copy.deepcopy(obj))
            new = copy.deepcopy(obj)
            new.setdefault("metadata", {})["resourceVersion"] = ""
            return self._update(res, old, new, keep_status=False)

    def remove(self, plural: str, namespace: str, name: str) -> None:
        res = _BY_PLURAL[plural]
        with self._cond:
            self._delete(res, namespace if res.namespaced else "", name)

    def get(self, plural: str, namespace: str, name: str) -> JSON | None:
        res = _BY_PLURAL[plural]
        with self._cond:
            obj = self._store.objects.get(plural, {}).get(
                (namespace if res.namespaced else "", name)
            )
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, plural: str, namespace: str | None = None) -> list[JSON]:
        with self._cond:
            objs = self._store.objects.get(plural, {})
            return [
                copy.deepcopy(o)
                for (ns, _), o in sorted(objs.items())
                if namespace is None or ns == namespace
            ]

    # -- store operations (call with self._cond held) ---------------------------------------

    def _bump(self) -> int:
        self._store.rv += 1
        return self._store.rv

    def _record(self, res: Resource, type_: str, obj: JSON) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        hist = self._store.history.setdefault(res.plural, [])
        rvs = self._store.history_rvs.setdefault(res.plural, [])
        hist.append(_WatchEvent(rv, type_, copy.deepcopy(obj)))
        rvs.append(rv)
        if len(hist) > self.history_limit:
            drop = len(hist) - self.history_limit // 2
            self._store.floor[res.plural] = rvs[drop - 1]
            del hist[:drop]
            del rvs[:drop]
        self._cond.notify_all()

    def _not_found(self, res: Resource, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{res.group_resource} "{name}" not found',
            {"name": name, "group": res.group, "kind": res.plural},
        )

    def _conflict(self, res: Resource, name: str) -> ApiError:
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {res.group_resource} "{name}": the object has '
            "been modified; please apply your changes to the latest version and try again",
            {"name": name, "group": res.group, "kind": res.plural},
        )

    def _invalid(
        self, kind: str, group: str, name: str, causes: list[tuple[str, Any, str]]
    ) -> ApiError:
        gk = f"{kind}.{group}" if group else kind
        text = ", ".join(f"{f}: Invalid value: {v!r}: {m}" for f, v, m in causes)
        return ApiError(
            422,
            "Invalid",
            f'{gk} "{name}" is invalid: {text}',
            {
                "name": name,
                "group": group,
                "kind": kind,
                "causes": [
                    {
                        "reason": "FieldValueInvalid",
                        "message": f"Invalid value: {v!r}: {m}",
                        "field": f,
                    }
                    for f, v, m in causes
                ],
            },
        )

    def _validate(self, res: Resource, obj: JSON) -> None:
        name = obj["metadata"].get("name", "")
        if res.plural == "deployments":
            replicas = (obj.get("spec") or {}).get("replicas", 1)
            if not isinstance(replicas, int) or replicas < 0:
                raise self._invalid(
                    res.kind,
                    res.group,
                    name,
                    [("spec.replicas", replicas, "must be greater than or equal to 0")],
                )
        if res.plural == "events":
            ns = obj["metadata"].get("namespace", "")
            inv_ns = (obj.get("involvedObject") or {}).get("namespace", "")
            if inv_ns and inv_ns != ns:
                raise self._invalid(
                    res.kind,
                    res.group,
                    name,
                    [("involvedObject.namespace", inv_ns, "does not match event.namespace")],
                )
            if obj.get("type") not in (None, "Normal", "Warning"):
                raise self._invalid(
                    res.kind,
                    res.group,
                    name,
                    [("type", obj.get("type"), 'supported values: "Normal", "Warning"')],
                )
        if res.plural == "leases":
            d = (obj.get("spec") or {}).get("leaseDurationSeconds")
            if d is not None and (not isinstance(d, int) or d <= 0):
                raise self._invalid(
                    res.kind,
                    res.group,
                    name,
                    [("spec.leaseDurationSeconds", d, "must be greater than 0")],
                )

    def _create(self, res: Resource, ns: str, obj: JSON) -> JSON:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(
                    422,
                    "Invalid",
                    f"{res.kind} is invalid: metadata.name: Required value: name or "
                    "generateName is required",
                )
        name = meta["name"]
        if res.namespaced:
            if meta.get("namespace", ns) != ns:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request",
                )
            meta["namespace"] = ns
        objs = self._store.objects.setdefault(res.plural, {})
        if (ns, name) in objs:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{res.group_resource} "{name}" already exists',
                {"name": name, "group": res.group, "kind": res.plural},
            )
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        self._validate(res, obj)
        meta["uid"] = str(uuid.uuid4())
        meta.setdefault("creationTimestamp", _now_rfc3339())
        if "status" in res.subresources:
            meta["generation"] = 1
        meta["resourceVersion"] = str(self._bump())
        objs[(ns, name)] = obj
        self._record(res, "ADDED", obj)
        return copy.deepcopy(obj)

    def _update(self, res: Resource, old: JSON, new: JSON, keep_status: bool) -> JSON:
        """Replace `old` by `new` (a full object); rv precondition from new's metadata."""
        meta_old = old["metadata"]
        name = meta_old["name"]
        rv = (new.get("metadata") or {}).get("resourceVersion") or ""
        if rv and rv != meta_old["resourceVersion"]:
            raise self._conflict(res, name)
        merged = copy.deepcopy(new)
        merged["apiVersion"], merged["kind"] = res.api_version, res.kind
        meta = merged.setdefault("metadata", {})
        for k in ("name", "namespace", "uid", "creationTimestamp", "generation"):
            if k in meta_old:
                meta[k] = meta_old[k]
            else:
                meta.pop(k, None)
        if keep_status and "status" in res.subresources:
            if "status" in old:
                merged["status"] = copy.deepcopy(old["status"])
            else:
                merged.pop("status", None)
        self._validate(res, merged)
        if "generation" in meta_old and _spec_of(merged) != _spec_of(old):
            meta["generation"] = int(meta_old["generation"]) + 1
        meta["resourceVersion"] = meta_old["resourceVersion"]
        if json.dumps(merged, sort_keys=True) == json.dumps(old, sort_keys=True):
            return copy.deepcopy(old)  # a no-op write does not bump resourceVersion
        meta["resourceVersion"] = str(self._bump())
        ns = meta_old.get("namespace", "") if res.namespaced else ""
        self._store.objects[res.plural][(ns, name)] = merged
        self._record(res, "MODIFIED", merged)
        return copy.deepcopy(merged)

    def _delete(self, res: Resource, ns: str, name: str) -> JSON:
        objs = self._store.objects.get(res.plural, {})
        obj = objs.pop((ns, name), None)
        if obj is None:
            raise self._not_found(res, name)
        obj["metadata"]["resourceVersion"] = str(self._bump())
        self._record(res, "DELETED", obj)
        return obj

    def _lookup(self, res: Resource, ns: str, name: str) -> JSON:
        obj = self._store.objects.get(res.plural, {}).get((ns, name))
        if obj is None:
            raise self._not_found(res, name)
        return obj

    # -- request handling (called by the handler) -------------------------------------------

    def _take_fault(self, req: Request) -> Fault | None:
        with self._cond:
            for f in self._faults:
                if f.matches(req):
                    f.times -= 1
                    if f.times <= 0:
                        self._faults.remove(f)
                    return f
        return None

    def _log(self, req: Request) -> None:
        with self._cond:
            self._requests.append(req)

    def handle(self, req: Request, res: Resource) -> tuple[int, JSON]:
        """Serve a non-watch request; returns (HTTP status, JSON body)."""
        with self._cond:
            return self._serve(req, res)

    def _serve(self, req: Request, res: Resource) -> tuple[int, JSON]:
        ns, name, sub = req.namespace, req.name, req.subresource
        if req.verb == "list":
            objs = self._store.objects.get(res.plural, {})
            items = [
                copy.deepcopy(o)
                for (o_ns, _), o in sorted(objs.items())
                if (not ns or o_ns == ns) and self._selected(o, req.query)
            ]
            if not res.custom:
                for it in items:  # items of built-in lists carry no apiVersion/kind
                    it.pop("apiVersion", None)
                    it.pop("kind", None)
            return 200, {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self._store.rv)},
                "items": items,
            }
        if req.verb == "create":
            if not isinstance(req.body, dict):
                raise ApiError(400, "BadRequest", "request body must be a JSON object")
            return 201, self._create(res, ns, copy.deepcopy(req.body))
        if req.verb == "delete":
            self._delete(res, ns, name)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        obj = self._lookup(res, ns, name)
        if sub == "scale":
            return self._serve_scale(req, res, obj)
        if req.verb == "get":
            return 200, copy.deepcopy(obj)
        body = req.body
        if req.verb == "patch":
            patched = self._patched(req, res, obj)
            if sub == "status":
                new = copy.deepcopy(obj)
                new.pop("status", None)
                if patched.get("status") is not None:
                    new["status"] = patched["status"]
            else:
                new = patched
                if "status" in res.subresources:
                    new.pop("status", None)
                    if obj.get("status") is not None:
                        new["status"] = copy.deepcopy(obj["status"])
            new.setdefault("metadata", {})["resourceVersion"] = ""
            return 200, self._update(res, obj, new, keep_status=False)
        if req.verb == "update":
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "request body must be a JSON object")
            if sub == "status":
                rv = (body.get("metadata") or {}).get("resourceVersion") or ""
                if rv and rv != obj["metadata"]["resourceVersion"]:
                    raise self._conflict(res, name)
                new = copy.deepcopy(obj)
                if "status" in body:
                    new["status"] = copy.deepcopy(body["status"])
                else:
                    new.pop("status", None)
                new["metadata"]["resourceVersion"] = ""
                return 200, self._update(res, obj, new, keep_status=False)
            return 200, self._update(res, obj, body, keep_status=True)
        raise ApiError(405, "MethodNotAllowed", f"{req.method} is not supported here")

    def _patched(self, req: Request, res: Resource, obj: JSON) -> JSON:
        """`obj` with the request's patch applied; a resourceVersion the patch sets (merge
        patch `metadata.resourceVersion`, JSON patch test/replace) is a precondition."""
        ct = req.content_type.split(";")[0].strip()
        body = req.body
        if ct == "application/strategic-merge-patch+json" and res.custom:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json-patch+json, application/merge-patch+json, "
                "application/apply-patch+yaml",
            )
        if ct in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "merge patch body must be a JSON object")
            patched = merge_patch(obj, body)
        elif ct == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "JSON patch body must be a list of operations")
            patched = json_patch(obj, body)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ct!r}")
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patch does not produce an object")
        rv = (patched.get("metadata") or {}).get("resourceVersion")
        if rv and rv != obj["metadata"]["resourceVersion"]:
            raise self._conflict(res, obj["metadata"]["name"])
        return patched

    def _scale_of(self, obj: JSON) -> JSON:
        meta = obj["metadata"]
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            },
        }

    def _serve_scale(self, req: Request, res: Resource, obj: JSON) -> tuple[int, JSON]:
        scale = self._scale_of(obj)
        name = obj["metadata"]["name"]
        if req.verb == "get":
            return 200, scale
        body = req.body
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "request body must be a JSON object")
        if req.verb == "patch":
            ct = req.content_type.split(";")[0].strip()
            if ct not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ct!r}")
            new_scale = merge_patch(scale, body)
        elif req.verb == "update":
            new_scale = body
        else:
            raise ApiError(405, "MethodNotAllowed", f"{req.verb} is not supported on scale")
        rv = (new_scale.get("metadata") or {}).get("resourceVersion") or ""
        if rv and rv != obj["metadata"]["resourceVersion"]:
            raise self._conflict(res, name)
        replicas = (new_scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise self._invalid(
                "Scale",
                "autoscaling",
                name,
                [("spec.replicas", replicas, "must be greater than or equal to 0")],
            )
        new = copy.deepcopy(obj)
        new.setdefault("spec", {})["replicas"] = replicas
        new["metadata"]["resourceVersion"] = ""
        updated = self._update(res, obj, new, keep_status=True)
        return 200, self._scale_of(updated)

    def _selected(self, obj: JSON, query: Mapping[str, str]) -> bool:
        ls = query.get("labelSelector")
        if ls and not label_selector_matches(ls, (obj.get("metadata") or {}).get("labels") or {}):
            return False
        fs = query.get("fieldSelector")
        return not (fs and not field_selector_matches(fs, obj))

    def watch_events(self, req: Request, res: Resource) -> Iterator[JSON]:
        """Events for a watch request, until timeoutSeconds, close_watches or stop.

        Validates and takes the starting snapshot before returning (raises ApiError for a
        bad request), so the caller can send headers before the first event exists."""
        q = req.query
        timeout_s = float(q.get("timeoutSeconds") or self.default_watch_timeout_s)
        deadline = time.monotonic() + timeout_s
        rv_param = q.get("resourceVersion", "")
        ns = req.namespace

        def visible(obj: JSON) -> bool:
            if ns and obj["metadata"].get("namespace") != ns:
                return False
            return self._selected(obj, q)

        with self._cond:
            epoch = self._watch_epoch
            if rv_param in ("", "0"):
                cursor = self._store.rv
                initial = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for o in self._store.objects.get(res.plural, {}).values()
                    if visible(o)
                ]
            else:
                try:
                    cursor = int(rv_param)
                except ValueError:
                    raise ApiError(
                        400, "BadRequest", f"invalid resourceVersion {rv_param!r}"
                    ) from None
                floor = self._store.floor.get(res.plural, 0)
                if cursor < floor:
                    msg = f"too old resource version: {cursor} ({floor})"
                    return iter([{"type": "ERROR", "object": status_object(410, "Expired", msg)}])
                initial = []
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        return self._watch_stream(res, initial, cursor, epoch, deadline, bookmarks, visible)

    def _watch_stream(
        self,
        res: Resource,
        initial: list[JSON],
        cursor: int,
        epoch: int,
        deadline: float,
        bookmarks: bool,
        visible: Callable[[JSON], bool],
    ) -> Iterator[JSON]:
        yield from initial
        while True:
            with self._cond:
                rvs = self._store.history_rvs.get(res.plural, [])
                start = bisect.bisect_right(rvs, cursor)
                batch = self._store.history.get(res.plural, [])[start:]
                if not batch:
                    remaining = deadline - time.monotonic()
                    if self._stopping.is_set() or self._watch_epoch != epoch:
                        return  # dropped: no bookmark
                    if remaining <= 0:
                        break
                    self._cond.wait(timeout=min(0.2, remaining))
                    continue
                cursor = batch[-1].rv
                out = [
                    {"type": e.type, "object": copy.deepcopy(e.obj)}
                    for e in batch
                    if visible(e.obj)
                ]
            yield from out
        if bookmarks:
            yield {
                "type": "BOOKMARK",
                "object": {
                    "kind": res.kind,
                    "apiVersion": res.api_version,
                    "metadata": {"resourceVersion": str(max(cursor, self.resource_version))},
                },
            }


_PATH_RE = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?/?$"
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kube-apiserver-test"
    # Headers and body go out in separate writes; with Nagle's algorithm and the client's
    # delayed ACK every response would wait about 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    @property
    def api(self) -> KubeAPIServer:
        return self.server.api  # type: ignore[attr-defined, no-any-return]

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _send_json(self, code: int, body: JSON) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        m = _PATH_RE.match(split.path)
        res: Resource | None = None
        if m:
            group = "" if m.group("core") else m.group("group")
            version = m.group("core") or m.group("version")
            res = _BY_PATH.get((group, version, m.group("plural")))
        if m is None or res is None or (m.group("ns") and not res.namespaced):
            self._send_json(
                404,
                status_object(404, "NotFound", "the server could not find the requested resource"),
            )
            return
        name, sub = m.group("name") or "", m.group("sub") or ""
        if sub and sub not in res.subresources:
            self._send_json(
                404,
                status_object(404, "NotFound", "the server could not find the requested resource"),
            )
            return
        method = self.command
        if method == "GET":
            verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError as e:
            self._send_json(400, status_object(400, "BadRequest", f"invalid JSON body: {e}"))
            return
        req = Request(
            method=method,
            path=split.path,
            query=query,
            verb=verb,
            group=res.group,
            resource=res.plural,
            subresource=sub,
            namespace=m.group("ns") or "",
            name=name,
            content_type=content_type,
            body=body,
        )
        self.api._log(req)
        fault = self.api._take_fault(req)
        if fault is not None and fault.delay_s > 0:
            self.api._stopping.wait(fault.delay_s)
        try:
            if fault is not None and fault.code is not None and not fault.after_apply:
                raise ApiError(fault.code, _reason_for(fault.code), fault.message)
            if verb == "watch":
                self._stream(req, res)
                return
            code, out = self.api.handle(req, res)
            if fault is not None and fault.code is not None:  # after_apply
                raise ApiError(fault.code, _reason_for(fault.code), fault.message)
        except ApiError as e:
            req.status = e.code
            self._safe_send(e.code, status_object(e.code, e.reason, e.message, e.details))
            return
        req.status = code
        self._safe_send(code, out)

    def _safe_send(self, code: int, body: JSON) -> None:
        try:
            self._send_json(code, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout); nothing to tell it

    def _stream(self, req: Request, res: Resource) -> None:
        try:
            events = self.api.watch_events(req, res)
        except ApiError as e:
            req.status = e.code
            self._safe_send(e.code, status_object(e.code, e.reason, e.message, e.details))
            return
        req.status = 200
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            for ev in events:
                self._chunk(ev)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _chunk(self, ev: JSON) -> None:
        data = json.dumps(ev).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _reason_for(code: int) -> str:
    return {
        400: "BadRequest",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        410: "Expired",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }.get(code, "Unknown")
