"""Helpers for the tests of deploy/: paths, YAML loading, a small kustomize, and the
metric names the monitoring files may use.

`build_kustomization(dir)` renders a kustomization the way `kubectl kustomize` does,
for the features deploy/kubernetes uses: resources (files and directories),
configMapGenerator (without the name hash), strategic-merge patches whose lists
are replaced (enough for custom resources; a list in a patch of a built-in kind
is refused rather than merged wrongly), namespace, labels (without selectors),
and images. It runs with no binary, so the structural checks run everywhere;
where `kubectl` is installed, a test also renders with it and compares.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
OVERLAYS = {kind: KUBE / "overlays" / kind for kind in ("prison", "probation", "exit")}
MONITORING = DEPLOY / "monitoring"
OPERATIONS = ROOT / "docs" / "operations.md"

Resource = dict[str, Any]

# Kinds with built-in strategic-merge list semantics (merge keys): patches to them
# must not carry lists here, since this renderer only replaces lists.
BUILTIN_API_GROUPS = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "batch/v1"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

# Metric names the dashboard and the alerts may use: today's (node/metrics.py) and
# the per-peer ones planned in issue 10 (label `peer`). Histograms add _bucket,
# _sum and _count series.
CURRENT_METRICS = {
    "handover_packets_sent_total",
    "handover_packets_received_total",
    "handover_packets_invalid_total",
    "handover_delivery_attempts_total",
    "handover_deliveries_finished_total",
    "handover_outbox_depth",
    "handover_overdue_expectations",
    "handover_receive_seconds",
    "handover_submit_seconds",
    "handover_delivery_seconds",
}
PLANNED_METRICS = {
    "handover_peer_delivery_seconds",
    "handover_peer_failures_total",
    "handover_peer_last_success_timestamp_seconds",
    "handover_peer_keyset_expiry_timestamp_seconds",
    "handover_dead_letters_total",
    "handover_outbox_oldest_age_seconds",
    "handover_byte_budget_in_use_bytes",
    "handover_audit_chain_ok",
}
HISTOGRAMS = {
    "handover_receive_seconds",
    "handover_submit_seconds",
    "handover_delivery_seconds",
    "handover_peer_delivery_seconds",
}
# Series Prometheus itself makes for every target.
PROMETHEUS_SERIES = {"up"}


def known_series() -> set[str]:
    names = CURRENT_METRICS | PLANNED_METRICS | PROMETHEUS_SERIES
    for hist in HISTOGRAMS:
        names |= {f"{hist}_bucket", f"{hist}_sum", f"{hist}_count"}
    return names


def load_yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc is not None]


def key(resource: Resource) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


def by_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def one(resources: list[Resource], kind: str, name: str | None = None) -> Resource:
    found = [r for r in by_kind(resources, kind) if name is None or r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- a small kustomize ---------------------------------------------------------------


class KustomizeError(AssertionError):
    pass


def _merge(target: dict[str, Any], patch: dict[str, Any], builtin: bool, where: str) -> None:
    for name, value in patch.items():
        if value is None:
            target.pop(name, None)
        elif isinstance(value, dict) and isinstance(target.get(name), dict):
            _merge(target[name], value, builtin, f"{where}.{name}")
        elif isinstance(value, list) and builtin:
            raise KustomizeError(
                f"{where}.{name}: a list in a patch of a built-in kind needs strategic-merge "
                "keys, which this renderer does not implement; patch maps only"
            )
        else:
            target[name] = copy.deepcopy(value)


def _pod_specs(resource: Resource) -> list[dict[str, Any]]:
    if resource["kind"] in WORKLOADS:
        return [resource["spec"]["template"]["spec"]]
    if resource["kind"] == "CronJob":
        return [resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _set_image(image: str, rule: dict[str, str]) -> str:
    match = re.fullmatch(r"(?P<name>[^:@]+(?::\d+/[^:@]+)?)(?P<rest>[:@].*)?", image)
    assert match, image
    if match["name"] != rule["name"]:
        return image
    name = rule.get("newName", match["name"])
    if "digest" in rule:
        return f"{name}@{rule['digest']}"
    if "newTag" in rule:
        return f"{name}:{rule['newTag']}"
    return name + (match["rest"] or "")


def build_kustomization(directory: Path) -> list[Resource]:
    """Render `directory`/kustomization.yaml (see the module docstring for the subset)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text("utf-8"))
    if spec.get("kind") != "Kustomization":
        raise KustomizeError(f"{directory}: not a Kustomization")
    supported = {
        "apiVersion",
        "kind",
        "resources",
        "configMapGenerator",
        "patches",
        "namespace",
        "labels",
        "images",
    }
    unsupported = set(spec) - supported
    if unsupported:
        raise KustomizeError(f"{directory}: fields this renderer lacks: {sorted(unsupported)}")

    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            resources += build_kustomization(path)
        elif path.is_file():
            resources += load_yaml_docs(path)
        else:
            raise KustomizeError(f"{directory}: resource {entry} does not exist")

    for generator in spec.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for item in generator.get("files", []):
            name, _, file_name = item.rpartition("=")
            path = directory / file_name
            if not path.is_file():
                raise KustomizeError(f"{directory}: configMapGenerator file {file_name} is missing")
            data[name or path.name] = path.read_text("utf-8")
        for literal in generator.get("literals", []):
            name, _, value = literal.partition("=")
            data[name] = value
        resources.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )

    for entry in spec.get("patches", []):
        if set(entry) != {"path"}:
            raise KustomizeError(f"{directory}: only `patches: - path:` is supported")
        (patch,) = load_yaml_docs(directory / entry["path"])
        targets = [
            r for r in resources if key(r) == key(patch) and r["apiVersion"] == patch["apiVersion"]
        ]
        if len(targets) != 1:
            raise KustomizeError(f"{directory}/{entry['path']}: matches {len(targets)} resources")
        target = targets[0]
        body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
        builtin = target["apiVersion"] in BUILTIN_API_GROUPS
        _merge(target, body, builtin, f"{key(target)}")

    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] == "Namespace":
                resource["metadata"]["name"] = spec["namespace"]
            else:
                resource["metadata"]["namespace"] = spec["namespace"]

    for entry in spec.get("labels", []):
        if entry.get("includeSelectors"):
            raise KustomizeError(f"{directory}: labels with includeSelectors are not supported")
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(entry["pairs"])
            if entry.get("includeTemplates") and resource["kind"] in WORKLOADS:
                template = resource["spec"]["template"].setdefault("metadata", {})
                template.setdefault("labels", {}).update(entry["pairs"])

    for rule in spec.get("images", []):
        for resource in resources:
            for pod in _pod_specs(resource):
                for container in pod.get("initContainers", []) + pod.get("containers", []):
                    container["image"] = _set_image(container["image"], rule)
    return resources


def kubectl_kustomize(directory: Path) -> list[Resource] | None:
    """`kubectl kustomize directory`, with generated names' hash suffixes removed;
    None when kubectl (with kustomize built in) is not installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    run = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if run.returncode != 0 and "unknown command" in run.stderr:
        return None
    assert run.returncode == 0, run.stderr
    text = run.stdout
    for doc in yaml.safe_load_all(text):
        if doc and doc["kind"] == "ConfigMap":
            hashed = doc["metadata"]["name"]
            plain = re.sub(r"-[a-z0-9]{10}$", "", hashed)
            text = re.sub(rf"\b{re.escape(hashed)}\b", plain, text)
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


# --- PromQL --------------------------------------------------------------------------


def promql_series(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (parsed, so a syntax error raises)."""
    import promql_parser

    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:
                for matcher in node.matchers.matchers:
                    if matcher.name == "__name__":
                        names.add(matcher.value)
        for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, str | int | float):
                visit(child)
        for child in getattr(node, "args", None) or []:
            visit(child)

    visit(promql_parser.parse(expr))
    return names


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def markdown_anchors(path: Path) -> set[str]:
    anchors = set()
    in_code = False
    for line in path.read_text("utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            anchors.add(github_anchor(line.lstrip("#")))
    return anchors


# --- the demo CA and a local HTTP(S) server ----------------------------------------------


def make_demo_ca(out: Path, *nodes: str) -> Path:
    """Run deploy/tls/make-demo-ca.sh into `out`; returns `out`."""
    run = subprocess.run(
        ["sh", str(DEPLOY / "tls" / "make-demo-ca.sh"), "-o", str(out), *nodes],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return out
