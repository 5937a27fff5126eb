"""The Kubernetes manifests: valid offline, least privilege, Pod Security "restricted".

- Built-in kinds validate against the Kubernetes OpenAPI schemas of K8S_VERSION
  (kubernetes-validate, strict: unknown fields fail). AutoscalingPolicy objects validate
  against our generated CRD (tests/test_crd.py); ServiceMonitor, PodMonitor and ScaledObject
  are checked for apiVersion, kind and the fields their CRDs require (their schemas are not
  bundled here).
- Overlays are rendered with `kubectl kustomize` (skipped when kubectl is absent).
- RBAC grants exactly `autoscaler.adapters.kube.KUBE_CALLS`.
- Every Pod template meets Pod Security "restricted", checked rule by rule.
"""

from __future__ import annotations

import argparse
import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from autoscaler.config import GROUP, KIND, PLURAL, load_workloads
from tests.test_crd import K8S_VERSION, crd_errors

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
BASE = MANIFESTS / "base"
EXAMPLES = MANIFESTS / "examples"
OVERLAYS = ("direct", "keda")
EXAMPLE_FILES = ("chat.yaml", "rag.yaml", "streaming.yaml", "batch.yaml")
NAMESPACE = "gpu-autoscaler"
SERVICE_ACCOUNT = "gpu-autoscaler"

JSON = dict[str, Any]
Call = tuple[str, str, str, str]

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl (with built-in kustomize) is not installed"
)

# Custom resources whose CRDs are not ours: apiVersion, kind and the fields their CRDs require.
FOREIGN_CRS: dict[tuple[str, str], tuple[str, ...]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("spec.selector", "spec.endpoints"),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("spec.selector", "spec.podMetricsEndpoints"),
    ("keda.sh/v1alpha1", "ScaledObject"): ("spec.scaleTargetRef.name", "spec.triggers"),
}


# -- loading --------------------------------------------------------------------------------


def load_file(path: Path) -> list[JSON]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@functools.cache
def _kustomize(directory: str) -> tuple[JSON, ...]:
    assert KUBECTL is not None
    proc = subprocess.run(
        [KUBECTL, "kustomize", directory],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d is not None)


def render(directory: Path) -> list[JSON]:
    """`kubectl kustomize DIR`, parsed (fresh copies)."""
    return copy.deepcopy(list(_kustomize(str(directory))))


def base_docs() -> list[JSON]:
    """The base's files as listed in its kustomization (no kubectl needed)."""
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs: list[JSON] = []
    for name in kustomization["resources"]:
        docs += load_file(BASE / name)
    return docs


def example_docs() -> list[JSON]:
    docs: list[JSON] = []
    for name in ("common.yaml", *EXAMPLE_FILES):
        docs += load_file(EXAMPLES / name)
    return docs


def one(docs: list[JSON], kind: str, name: str) -> JSON:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def key(doc: Mapping[str, Any]) -> str:
    meta = doc["metadata"]
    return f"{doc['kind']}/{meta.get('namespace', '')}/{meta['name']}"


def get(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


# -- schema validation ----------------------------------------------------------------------


def validation_problems(doc: JSON) -> list[str]:
    """Why the API server (or the CRD's owner) would refuse this object (empty: valid)."""
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if kind == KIND and api == f"{GROUP}/v1alpha1":
        return crd_errors(doc)
    required = FOREIGN_CRS.get((str(api), str(kind)))
    if required is not None:
        return [f"{p}: Required value" for p in required if get(doc, p) in (None, [], {})]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {api} {kind} in Kubernetes {K8S_VERSION}"]
    return []


def _all_sources() -> Iterator[Any]:
    for doc in base_docs():
        yield pytest.param(doc, id=f"base:{key(doc)}")
    for doc in example_docs():
        yield pytest.param(doc, id=f"examples:{key(doc)}")


@pytest.mark.parametrize("doc", list(_all_sources()))
def test_every_manifest_validates_offline(doc: JSON) -> None:
    assert validation_problems(doc) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_overlay_object_validates_offline(overlay: str) -> None:
    problems = {key(d): validation_problems(d) for d in render(MANIFESTS / "overlays" / overlay)}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        # a misspelled field in a built-in kind
        pytest.param(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "s"},
                "spec": {"prots": [{"port": 80}]},
            },
            "Additional properties are not allowed",
            id="unknown-field",
        ),
        # a wrong type
        pytest.param(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "p"},
                "spec": {"minAvailable": [1]},
            },
            "spec.minAvailable",
            id="wrong-type",
        ),
        # a foreign custom resource without its required fields
        pytest.param(
            {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}},
            "spec.scaleTargetRef.name: Required value",
            id="scaledobject-without-target",
        ),
        # our custom resource: checked against the CRD
        pytest.param(
            {
                "apiVersion": f"{GROUP}/v1alpha1",
                "kind": KIND,
                "metadata": {"name": "x", "namespace": "n"},
                "spec": {"targets": {}, "policy": {"scenario": "chat"}},
            },
            "spec.targets.on_demand: Required value",
            id="policy-without-on-demand",
        ),
        # a kind the pinned Kubernetes does not serve
        pytest.param(
            {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "i"}},
            "no schema",
            id="removed-api",
        ),
    ],
)
def test_validation_refuses_broken_objects(doc: JSON, expected: str) -> None:
    problems = validation_problems(doc)
    assert any(expected in p for p in problems), problems


# -- kustomize ------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("directory", ["base", "overlays/direct", "overlays/keda", "examples"])
def test_kustomizations_build(directory: str) -> None:
    docs = render(MANIFESTS / directory)
    assert docs, f"{directory} rendered nothing"
    assert len({key(d) for d in docs}) == len(docs), "duplicate objects"


@needs_kubectl
def test_direct_overlay_is_the_base() -> None:
    assert render(MANIFESTS / "overlays" / "direct") == render(BASE)


@needs_kubectl
def test_base_renders_exactly_its_files() -> None:
    # the tests that read files without kubectl see what `kubectl apply -k` applies
    assert sorted(map(key, render(BASE))) == sorted(map(key, base_docs()))


@needs_kubectl
def test_examples_kustomization_covers_every_example_file() -> None:
    assert sorted(map(key, render(EXAMPLES))) == sorted(map(key, example_docs()))


# -- the controller Deployment --------------------------------------------------------------


def run_parser() -> argparse.ArgumentParser:
    from autoscaler.service import add_run_arguments

    p = argparse.ArgumentParser(exit_on_error=False)
    add_run_arguments(p)
    return p


def controller(docs: list[JSON]) -> JSON:
    return one(docs, "Deployment", "gpu-autoscaler")


def controller_args(docs: list[JSON]) -> argparse.Namespace:
    (container,) = controller(docs)["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "run"
    return run_parser().parse_args(args[1:])


def test_controller_runs_in_cluster_mode_with_leader_election() -> None:
    docs = base_docs()
    dep = controller(docs)
    assert dep["spec"]["replicas"] == 2
    args = controller_args(docs)
    assert args.prometheus_url == "http://prometheus-operated.monitoring.svc:9090"
    assert args.leader_elect is True and args.dry_run is False and args.live is False
    assert args.config is None  # workloads come from AutoscalingPolicy objects
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["image"] == "ghcr.io/gpu-autoscaler/gpu-autoscaler:0.1.0"
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT


def probe_statuses(container: Mapping[str, Any]) -> dict[str, int]:
    """HTTP status of each probe's path on the real app (in process, no socket)."""
    import asyncio

    import httpx

    from autoscaler.api import ServiceStatus, create_app
    from autoscaler.store import DecisionStore
    from autoscaler.telemetry import Telemetry

    store = DecisionStore()
    app = create_app(ServiceStatus(store=store, telemetry=Telemetry(store)))

    async def fetch() -> dict[str, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://controller") as c:
            out = {}
            for probe in ("liveness", "readiness", "startup"):
                path = container[f"{probe}Probe"]["httpGet"]["path"]
                out[probe] = (await c.get(path)).status_code
            return out

    return asyncio.run(fetch())


def test_controller_ports_and_probes_match_the_service_defaults() -> None:
    docs = base_docs()
    args = controller_args(docs)
    (container,) = controller(docs)["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": args.http_port, "grpc": args.grpc_port} == {"http": 8080, "grpc": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # the API answers on those paths: /healthz at once, /readyz 503 until a tick ran
    assert probe_statuses(container) == {"liveness": 200, "readiness": 503, "startup": 200}
    service = one(docs, "Service", "gpu-autoscaler")
    assert {(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        ("http", 8080, "http"),
        ("grpc", 9090, "grpc"),
    }
    labels = controller(docs)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_controller_lease_rbac_names_the_lease_the_service_uses() -> None:
    docs = base_docs()
    args = controller_args(docs)
    role = one(docs, "Role", "gpu-autoscaler-leader-election")
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert all(args.lease_name in r["resourceNames"] for r in named)
    assert role["metadata"]["namespace"] == NAMESPACE  # --lease-namespace: POD_NAMESPACE


def test_pdb_and_servicemonitor_select_the_controller() -> None:
    docs = base_docs()
    labels = controller(docs)["spec"]["template"]["metadata"]["labels"]
    pdb = one(docs, "PodDisruptionBudget", "gpu-autoscaler")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(docs, "Service", "gpu-autoscaler")
    monitor = one(docs, "ServiceMonitor", "gpu-autoscaler")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_network_policy_admits_monitoring_and_keda_and_reaches_what_the_controller_calls() -> None:
    docs = base_docs()
    policy = one(docs, "NetworkPolicy", "gpu-autoscaler")["spec"]
    labels = controller(docs)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    (peer,) = ingress["from"]
    (expr,) = peer["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name" and expr["operator"] == "In"
    assert sorted(expr["values"]) == ["keda", "monitoring"]
    assert sorted(p["port"] for p in ingress["ports"]) == [8080, 9090]
    egress_ports = {
        (p["port"], p.get("protocol", "TCP")) for r in policy["egress"] for p in r["ports"]
    }
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (9090, "TCP")} == egress_ports
    # Prometheus: the namespace and port of --prometheus-url
    url = controller_args(docs).prometheus_url
    m = re.fullmatch(r"http://[a-z0-9-]+\.([a-z0-9-]+)\.svc:(\d+)", url)
    assert m is not None, url
    (prom,) = [r for r in policy["egress"] if r.get("to")]
    assert prom["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": m.group(1)
    }
    assert [p["port"] for p in prom["ports"]] == [int(m.group(2))]


def test_namespace_enforces_pod_security_restricted() -> None:
    for docs, name in ((base_docs(), NAMESPACE), (example_docs(), "inference")):
        labels = one(docs, "Namespace", name)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# -- RBAC: exactly the calls the code makes -------------------------------------------------


def granted(role: Mapping[str, Any]) -> set[Call]:
    """(apiGroup, resource, subresource, verb) tuples a Role/ClusterRole grants."""
    out: set[Call] = set()
    for rule in role.get("rules") or []:
        assert "nonResourceURLs" not in rule, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                resource, _, sub = res.partition("/")
                for verb in rule["verbs"]:
                    out.add((group, resource, sub, verb))
    return out


def rbac_of(docs: list[JSON]) -> tuple[set[Call], set[Call]]:
    """What the controller's ServiceAccount is granted: (cluster-wide, in its namespace)."""
    subject = {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
    cluster: set[Call] = set()
    namespaced: set[Call] = set()
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        role = one(docs, ref["kind"], ref["name"])
        if binding["kind"] == "ClusterRoleBinding":
            assert ref["kind"] == "ClusterRole"
            cluster |= granted(role)
        else:
            assert binding["metadata"]["namespace"] == NAMESPACE
            namespaced |= granted(role)
    return cluster, namespaced


def kube_calls() -> set[Call]:
    from autoscaler.adapters.kube import KUBE_CALLS

    calls = set(KUBE_CALLS)
    assert len(calls) == len(KUBE_CALLS), "KUBE_CALLS lists a call twice"
    return calls


LEASES = "coordination.k8s.io", "leases"
SCALE_WRITES = {("apps", "deployments", "scale", v) for v in ("patch", "update")}


def test_rbac_grants_exactly_the_calls_the_controller_makes() -> None:
    calls = kube_calls()
    cluster, namespaced = rbac_of(base_docs())
    assert cluster | namespaced == calls, {
        "granted, never called": sorted((cluster | namespaced) - calls),
        "called, not granted": sorted(calls - (cluster | namespaced)),
    }
    # leases only in the controller's own namespace; nothing else there
    assert {c for c in calls if c[:2] == LEASES} == namespaced
    assert not any(c[:2] == LEASES for c in cluster)
    assert cluster & namespaced == set()


def test_rbac_derivation_sees_extra_and_missing_rights() -> None:
    # the comparison above can fail both ways
    docs = base_docs()
    role = one(docs, "ClusterRole", "gpu-autoscaler")
    role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    role["rules"] = [r for r in role["rules"] if r["resources"] != ["events"]]
    cluster, namespaced = rbac_of(docs)
    assert ("", "secrets", "", "get") in cluster - kube_calls()
    assert ("", "events", "", "create") in kube_calls() - (cluster | namespaced)


def test_controller_is_bound_to_its_service_account() -> None:
    docs = base_docs()
    assert one(docs, "ServiceAccount", SERVICE_ACCOUNT)["metadata"]["namespace"] == NAMESPACE
    assert controller(docs)["spec"]["template"]["spec"]["serviceAccountName"] == SERVICE_ACCOUNT


# -- the KEDA overlay -----------------------------------------------------------------------


@needs_kubectl
def test_keda_overlay_decides_without_scale_rights() -> None:
    docs = render(MANIFESTS / "overlays" / "keda")
    assert controller_args(docs).dry_run is True
    cluster, namespaced = rbac_of(docs)
    assert not (cluster | namespaced) & SCALE_WRITES
    # everything else stays as the code needs it
    assert cluster | namespaced == kube_calls() - SCALE_WRITES


@needs_kubectl
def test_keda_overlay_scaledobjects_point_at_the_controller_and_the_example_pools() -> None:
    docs = render(MANIFESTS / "overlays" / "keda")
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled, "no ScaledObject in the keda overlay"
    service = one(docs, "Service", "gpu-autoscaler")
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    http_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    policies = {
        f"{w.namespace}/{w.name}": w
        for w in load_workloads([EXAMPLES / f for f in EXAMPLE_FILES]).workloads
    }
    for so in scaled:
        ns = so["metadata"]["namespace"]
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] in ("external", "external-push"):
                assert meta["scalerAddress"] in (
                    f"{host}:{grpc_port}",
                    f"{host}.cluster.local:{grpc_port}",
                ), meta
            else:
                assert trigger["type"] == "metrics-api", trigger
                assert meta["url"].startswith(f"http://{host}:{http_port}/v1/keda/"), meta
            workload = policies.get(meta.get("workload", f"{ns}/{so['metadata']['name']}"))
            assert workload is not None, f"{key(so)} names no example AutoscalingPolicy"
            pool = meta.get("pool", "spot").replace("-", "_")
            target = getattr(workload.spec.targets, pool)
            assert so["spec"]["scaleTargetRef"]["name"] == target, (key(so), pool, target)
            assert ns == workload.namespace


# -- Pod Security Standards "restricted" (v1.32 rules), checked rule by rule -----------------

RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(template: Mapping[str, Any]) -> list[str]:
    """Why a Pod template fails Pod Security "restricted" (empty: it passes).

    `template` is a PodTemplateSpec ({metadata, spec}). The rules of the Kubernetes Pod
    Security Standards page: baseline (host namespaces, privileged, capabilities, hostPath,
    host ports, AppArmor, SELinux, /proc mount, seccomp, sysctls) plus restricted (volume
    types, privilege escalation, non-root, seccomp, capabilities)."""
    out: list[str] = []
    spec = template.get("spec") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    psc = spec.get("securityContext") or {}
    containers = [
        (kind, c)
        for kind in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(kind) or []
    ]

    # baseline
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"spec.{field}: must be unset or false")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess: must be unset or false")
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if "hostPath" in kinds:
            out.append(f"volume {v['name']}: hostPath is forbidden")
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {v['name']}: type {sorted(kinds)} not allowed in restricted")
    for name, value in annotations.items():
        if name.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            out.append(f"annotation {name}: {value!r} is not runtime/default or localhost/*")
    for sysctl in psc.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"spec.securityContext.sysctls: {sysctl['name']} is not a safe sysctl")

    def check_common(where: str, sc: Mapping[str, Any]) -> None:
        se = sc.get("seLinuxOptions") or {}
        if se.get("type", "") not in SELINUX_TYPES:
            out.append(f"{where}.seLinuxOptions.type: {se['type']!r} not allowed")
        for f in ("user", "role"):
            if se.get(f):
                out.append(f"{where}.seLinuxOptions.{f}: must be unset")
        app_armor = (sc.get("appArmorProfile") or {}).get("type")
        if app_armor not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{where}.appArmorProfile.type: {app_armor!r} not allowed")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}.runAsUser: must not be 0")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}.seccompProfile.type: Unconfined is forbidden")

    check_common("spec.securityContext", psc)
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    for kind, c in containers:
        where = f"{kind}[{c['name']}].securityContext"
        sc = c.get("securityContext") or {}
        check_common(where, sc)
        if sc.get("privileged"):
            out.append(f"{where}.privileged: must be unset or false")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}.windowsOptions.hostProcess: must be unset or false")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}.procMount: must be Default")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{kind}[{c['name']}].ports: hostPort {port['hostPort']} forbidden")
        # restricted
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}.allowPrivilegeEscalation: must be false")
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            out.append(f"{where}.runAsNonRoot: must be true (here or in the pod)")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is None and not pod_seccomp:
            out.append(f"{where}.seccompProfile.type: RuntimeDefault or Localhost required")
        elif seccomp not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{where}.seccompProfile.type: {seccomp!r} not allowed")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}.capabilities.drop: must include ALL")
        extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if extra:
            out.append(
                f"{where}.capabilities.add: only NET_BIND_SERVICE allowed, found {sorted(extra)}"
            )
    return out


def pod_templates(docs: list[JSON]) -> Iterator[tuple[str, JSON]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield key(d), d["spec"]["template"]
        elif d["kind"] == "CronJob":
            yield key(d), d["spec"]["jobTemplate"]["spec"]["template"]
        elif d["kind"] == "Pod":
            yield key(d), d


def _templates() -> list[Any]:
    out = [pytest.param(t, id=k) for k, t in pod_templates(base_docs())]
    out += [pytest.param(t, id=k) for k, t in pod_templates(example_docs())]
    return out


@pytest.mark.parametrize("template", _templates())
def test_every_pod_template_meets_pod_security_restricted(template: JSON) -> None:
    assert restricted_violations(template) == []


def test_pod_templates_include_controller_examples_and_placeholders() -> None:
    names = [k for k, _ in pod_templates(base_docs() + example_docs())]
    assert f"Deployment/{NAMESPACE}/gpu-autoscaler" in names
    assert len([n for n in names if n.endswith("-warm")]) == 4
    assert len(names) == 1 + 3 * len(EXAMPLE_FILES)


def test_controller_is_hardened_beyond_restricted() -> None:
    pod = controller(base_docs())["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsUser"] == 65532
    assert pod["securityContext"]["runAsUser"] == 65532
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert c["resources"]["requests"] and c["resources"]["limits"]


def _good_template() -> JSON:
    return copy.deepcopy(controller(base_docs())["spec"]["template"])


def _container_sc(t: JSON) -> JSON:
    sc: JSON = t["spec"]["containers"][0]["securityContext"]
    return sc


@pytest.mark.parametrize(
    ("breaks", "violation"),
    [
        pytest.param(
            lambda t: t["spec"].update(hostNetwork=True), "spec.hostNetwork", id="host-network"
        ),
        pytest.param(lambda t: t["spec"].update(hostPID=True), "spec.hostPID", id="host-pid"),
        pytest.param(
            lambda t: _container_sc(t).update(privileged=True), ".privileged", id="privileged"
        ),
        pytest.param(
            lambda t: _container_sc(t).update(allowPrivilegeEscalation=True),
            ".allowPrivilegeEscalation",
            id="privilege-escalation",
        ),
        pytest.param(
            lambda t: _container_sc(t).pop("allowPrivilegeEscalation"),
            ".allowPrivilegeEscalation",
            id="privilege-escalation-unset",
        ),
        pytest.param(
            lambda t: (
                _container_sc(t).pop("runAsNonRoot"),
                t["spec"]["securityContext"].pop("runAsNonRoot"),
            ),
            ".runAsNonRoot",
            id="may-run-as-root",
        ),
        pytest.param(
            lambda t: _container_sc(t).update(runAsNonRoot=False),
            ".runAsNonRoot",
            id="container-opts-out-of-non-root",
        ),
        pytest.param(lambda t: _container_sc(t).update(runAsUser=0), ".runAsUser", id="uid-0"),
        pytest.param(
            lambda t: _container_sc(t)["capabilities"].update(drop=["NET_RAW"]),
            ".capabilities.drop",
            id="capabilities-not-dropped",
        ),
        pytest.param(
            lambda t: _container_sc(t)["capabilities"].update(add=["SYS_ADMIN"]),
            ".capabilities.add",
            id="capability-added",
        ),
        pytest.param(
            lambda t: _container_sc(t)["capabilities"].update(add=["NET_BIND_SERVICE"]),
            None,
            id="net-bind-service-is-allowed",
        ),
        pytest.param(
            lambda t: _container_sc(t)["seccompProfile"].update(type="Unconfined"),
            ".seccompProfile.type",
            id="seccomp-unconfined",
        ),
        pytest.param(
            lambda t: (
                _container_sc(t).pop("seccompProfile"),
                t["spec"]["securityContext"].pop("seccompProfile"),
            ),
            ".seccompProfile.type",
            id="seccomp-unset",
        ),
        pytest.param(
            lambda t: t["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
            "hostPath is forbidden",
            id="host-path",
        ),
        pytest.param(
            lambda t: t["spec"]["volumes"].append(
                {"name": "n", "nfs": {"server": "s", "path": "/"}}
            ),
            "not allowed in restricted",
            id="nfs-volume",
        ),
        pytest.param(
            lambda t: t["spec"]["containers"][0]["ports"].append(
                {"containerPort": 80, "hostPort": 80}
            ),
            "hostPort 80",
            id="host-port",
        ),
        pytest.param(
            lambda t: (
                t["spec"]
                .setdefault("initContainers", [])
                .append({"name": "init", "image": "busybox"})
            ),
            "initContainers[init]",
            id="bare-init-container",
        ),
        pytest.param(
            lambda t: t["spec"]["securityContext"].update(
                sysctls=[{"name": "kernel.msgmax", "value": "1"}]
            ),
            "kernel.msgmax",
            id="unsafe-sysctl",
        ),
        pytest.param(
            lambda t: _container_sc(t).update(seLinuxOptions={"type": "spc_t"}),
            "seLinuxOptions.type",
            id="selinux-type",
        ),
        pytest.param(
            lambda t: _container_sc(t).update(procMount="Unmasked"),
            ".procMount",
            id="unmasked-proc",
        ),
    ],
)
def test_restricted_check_finds_each_violation(breaks: Any, violation: str | None) -> None:
    t = _good_template()
    breaks(t)
    found = restricted_violations(t)
    if violation is None:
        assert found == []
    else:
        assert any(violation in v for v in found), found


# -- the examples ---------------------------------------------------------------------------


def _example(name: str) -> list[JSON]:
    return load_file(EXAMPLES / name)


def test_examples_load_through_the_controller_config_loader() -> None:
    result = load_workloads([EXAMPLES / f for f in EXAMPLE_FILES])
    assert result.errors == []
    assert sorted(w.spec.policy.scenario.value for w in result.workloads) == [
        "batch",
        "chat",
        "rag",
        "streaming",
    ]


def _priority_classes() -> dict[str, JSON]:
    return {
        d["metadata"]["name"]: d
        for d in load_file(EXAMPLES / "common.yaml")
        if d["kind"] == "PriorityClass"
    }


@pytest.mark.parametrize("filename", EXAMPLE_FILES)
def test_example_policy_targets_its_three_pool_deployments(filename: str) -> None:
    docs = _example(filename)
    (workload,) = load_workloads([EXAMPLES / filename]).workloads
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    t = workload.spec.targets
    assert t.spot and t.warm
    assert set(deployments) == {t.spot, t.on_demand, t.warm}
    for d in deployments.values():
        assert d["metadata"]["namespace"] == workload.namespace
        # the controller owns replicas; a re-apply must not reset them
        assert "replicas" not in d["spec"], d["metadata"]["name"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # the PodMonitor turns this label into the `workload` label the queries group by
        assert labels["gpu-autoscaler.io/workload"] == workload.series_name


def _gpu_resource(container: Mapping[str, Any]) -> tuple[str, str]:
    res = container["resources"]
    gpu = {k: v for k, v in res["requests"].items() if k.startswith("nvidia.com/")}
    assert len(gpu) == 1, container["name"]
    ((name, value),) = gpu.items()
    assert res["limits"][name] == value, "extended resources need requests == limits"
    return name, value


@pytest.mark.parametrize("filename", EXAMPLE_FILES)
def test_example_pools_are_placed_as_the_policy_assumes(filename: str) -> None:
    docs = _example(filename)
    (workload,) = load_workloads([EXAMPLES / filename]).workloads
    t = workload.spec.targets
    classes = _priority_classes()
    by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for pool, name in (("spot", t.spot), ("on_demand", t.on_demand), ("warm", t.warm)):
        pod = by_name[name]["spec"]["template"]["spec"]
        capacity = "spot" if pool == "spot" else "on-demand"
        assert pod["nodeSelector"]["karpenter.sh/capacity-type"] == capacity, name
        tolerations = {tol["key"] for tol in pod["tolerations"]}
        assert "nvidia.com/gpu" in tolerations, name
        (spread,) = pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
        assert spread["labelSelector"]["matchLabels"].items() <= (
            by_name[name]["spec"]["template"]["metadata"]["labels"].items()
        )
        assert pod["priorityClassName"] in classes, name
        # one GPU (or MIG slice) per replica, placeholders included
        gpu = _gpu_resource(pod["containers"][0])
        assert gpu[1] == "1"
        if pool == "warm":
            placeholder = classes[pod["priorityClassName"]]
            assert placeholder["value"] < 0 and placeholder["preemptionPolicy"] == "Never"
            # above the Cluster Autoscaler's expendable cutoff, or no node is kept for it
            assert placeholder["value"] >= -10
            assert pod["containers"][0]["image"].startswith("registry.k8s.io/pause:")
            serving = by_name[t.on_demand]["spec"]["template"]["spec"]
            # the init container caches the serving image on the node
            assert pod["initContainers"][0]["image"] == serving["containers"][0]["image"]
            # it reserves what a serving replica needs, so that replica fits its node
            assert (
                pod["containers"][0]["resources"]["requests"]
                == serving["containers"][0]["resources"]["requests"]
            )
        else:
            vllm = pod["containers"][0]
            assert (
                vllm["startupProbe"]["failureThreshold"] * vllm["startupProbe"]["periodSeconds"]
                >= 600
            ), "model load needs a long startup probe"
            assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
            assert classes[pod["priorityClassName"]]["value"] > 0


def test_priority_classes_order_interactive_over_batch_over_placeholders() -> None:
    c = _priority_classes()
    assert (
        c["gpu-interactive"]["value"]
        > c["gpu-batch"]["value"]
        > 0
        > c["gpu-warm-placeholder"]["value"]
    )


def test_one_example_is_sized_on_a_mig_profile() -> None:
    mig = []
    for f in EXAMPLE_FILES:
        for d in _example(f):
            if d["kind"] == "Deployment":
                name, _ = _gpu_resource(d["spec"]["template"]["spec"]["containers"][0])
                if name == "nvidia.com/mig-1g.10gb":
                    mig.append(d["metadata"]["name"])
    assert len(mig) == 3, mig  # spot, on-demand and warm of one workload


def test_one_example_gates_readiness_on_model_load_and_can_set_the_gate() -> None:
    gated = []
    for f in EXAMPLE_FILES:
        docs = _example(f)
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            pod = d["spec"]["template"]["spec"]
            gates = [g["conditionType"] for g in pod.get("readinessGates") or []]
            if not gates:
                continue
            gated.append(d["metadata"]["name"])
            assert gates == ["gpu-autoscaler.io/model-loaded"]
            # something in the pod sets the condition, with the right to do so
            setter = [c for c in pod["containers"] if "gpu-autoscaler.io/model-loaded" in str(c)]
            assert setter, "no container sets the readiness gate's condition"
            assert pod["automountServiceAccountToken"] is True
            sa = pod["serviceAccountName"]
            binding = one(docs, "RoleBinding", sa)
            assert binding["subjects"][0]["name"] == sa
            role = one(docs, binding["roleRef"]["kind"], binding["roleRef"]["name"])
            assert granted(role) == {("", "pods", "status", "patch")}
    assert len(gated) == 2, gated  # the spot and on-demand serving pods of one example


@pytest.mark.parametrize("filename", EXAMPLE_FILES)
def test_example_pdbs_cover_serving_pools_but_never_placeholders(filename: str) -> None:
    docs = _example(filename)
    (workload,) = load_workloads([EXAMPLES / filename]).workloads
    t = workload.spec.targets
    labels = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] == "Deployment"
    }
    covered = set()
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        covered |= {name for name, lab in labels.items() if sel.items() <= lab.items()}
    assert covered == {t.spot, t.on_demand}


def test_pod_monitor_scrapes_the_serving_pods_and_labels_the_workload() -> None:
    common = load_file(EXAMPLES / "common.yaml")
    monitor = one(common, "PodMonitor", "inference-servers")
    (expr,) = monitor["spec"]["selector"]["matchExpressions"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert targets["workload"] == ["__meta_kubernetes_pod_label_gpu_autoscaler_io_workload"]
    assert expr == {"key": "gpu-autoscaler.io/workload", "operator": "Exists"}
    for f in EXAMPLE_FILES:
        for d in _example(f):
            if d["kind"] == "Deployment" and not d["metadata"]["name"].endswith("-warm"):
                ports = {
                    p["name"]
                    for c in d["spec"]["template"]["spec"]["containers"]
                    for p in c.get("ports") or []
                }
                assert endpoint["port"] in ports, d["metadata"]["name"]


def test_quota_limits_the_tenant_gpus_and_the_warm_pool() -> None:
    common = load_file(EXAMPLES / "common.yaml")
    quotas = {d["metadata"]["name"]: d["spec"] for d in common if d["kind"] == "ResourceQuota"}
    assert "requests.nvidia.com/gpu" in quotas["gpu-budget"]["hard"]
    (scope,) = quotas["warm-pool-budget"]["scopeSelector"]["matchExpressions"]
    assert scope["scopeName"] == "PriorityClass" and scope["values"] == ["gpu-warm-placeholder"]
    assert any(d["kind"] == "LimitRange" for d in common)


# -- the image ------------------------------------------------------------------------------


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Dockerfile instructions per stage, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op.upper(), rest.strip()))
    return stages


def test_dockerfile_final_stage_is_non_root_without_build_tools() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    ops = dict(final)
    assert ops["USER"] in ("65532", "65532:65532")
    assert ops["ENTRYPOINT"] == '["gpu-autoscaler"]' and ops["CMD"] == '["run"]'
    runs = " ".join(rest for op, rest in final if op == "RUN")
    assert not re.search(r"\b(apt-get|apk|pip|gcc|build-essential)\b", runs), runs
    # the controller's runAsUser is the image's user
    pod = controller(base_docs())["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == ops["USER"].split(":")[0]
    # the entry point is the project's console script
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "gpu-autoscaler" in scripts


def test_dockerignore_admits_exactly_what_the_dockerfile_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # an allow-list: everything out (.venv, .git, caches), then the sources back in
    assert lines[0] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    copied = set()
    for op, rest in _dockerfile_stages()[0]:
        if op == "COPY" and not rest.startswith("--from"):
            copied |= {p.rstrip("/") for p in rest.split()[:-1]}
    assert allowed == copied
    for path in copied:
        assert (ROOT / path).exists(), path


def test_crd_plural_matches_rbac() -> None:
    # the ClusterRole names the CRD's plural, and the CRD in the base is ours
    cluster, _ = rbac_of(base_docs())
    assert (GROUP, PLURAL, "", "list") in cluster
    crd = one(base_docs(), "CustomResourceDefinition", f"{PLURAL}.{GROUP}")
    assert crd["spec"]["names"]["kind"] == KIND
