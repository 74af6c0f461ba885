"""deploy/kubernetes: each agency's overlay renders, its built-in kinds validate
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), its custom
resources against tests/deploy/crd_schemas.py, and the pieces fit together (labels
and selectors, ports, probes, Secrets, settings, backups, monitoring)."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import jsonschema_rs
import kubernetes_validate
import pytest
import yaml
from crd_schemas import SCHEMAS
from deploy_support import (
    KUBE,
    MONITORING,
    OVERLAYS,
    KustomizeError,
    Resource,
    build_kustomization,
    by_kind,
    key,
    kubectl_kustomize,
    load_yaml_docs,
    one,
)

from handover.node.config import NodeConfig

KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Secrets made outside kustomize (docs/operations.md); the DSN's by CloudNativePG.
OUT_OF_BAND_SECRETS = {"handover-keys", "handover-tls", "handover-backup-s3"}
# handover.toml settings that issue 10 adds to the node (not in NodeConfig yet).
PLANNED_SETTINGS = {
    "local_listen",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_client_cert",
    "tls_client_key",
}
EXPECTED_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("barmancloud.cnpg.io/v1", "ObjectStore"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

RENDERED: dict[str, list[Resource]] = {}


def rendered(kind: str) -> list[Resource]:
    if kind not in RENDERED:
        RENDERED[kind] = build_kustomization(OVERLAYS[kind])
    return copy.deepcopy(RENDERED[kind])


def settings(kind: str) -> dict[str, Any]:
    return tomllib.loads((OVERLAYS[kind] / "handover.toml").read_text("utf-8"))


def pod_spec(resources: list[Resource]) -> dict[str, Any]:
    return one(resources, "Deployment", "handover")["spec"]["template"]["spec"]


def node_container(resources: list[Resource]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec(resources)["containers"] if c["name"] == "handover"]
    return container


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- rendering ------------------------------------------------------------------------

KINDS = sorted(OVERLAYS)


def test_there_is_one_overlay_per_agency_kind() -> None:
    assert set(OVERLAYS) == {"prison", "probation", "exit"}
    for kind, directory in OVERLAYS.items():
        assert (directory / "kustomization.yaml").is_file(), kind


@pytest.mark.parametrize("kind", KINDS)
def test_overlay_renders_every_kind_into_its_own_namespace(kind: str) -> None:
    resources = rendered(kind)
    assert {(r["apiVersion"], r["kind"]) for r in resources} == EXPECTED_KINDS
    keys = [key(r) for r in resources]
    assert len(keys) == len(set(keys)), "duplicate kind/name"
    namespace = f"handover-{kind}"
    one(resources, "Namespace", namespace)
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == namespace, key(resource)
        labels = resource["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == f"{kind}.example", key(resource)


@pytest.mark.parametrize("kind", KINDS)
def test_overlay_renders_as_kubectl_kustomize_does(kind: str) -> None:
    reference = kubectl_kustomize(OVERLAYS[kind])
    if reference is None:
        pytest.skip("kubectl is not installed: the structural rendering stands alone")
    ours = sorted(rendered(kind), key=key)
    theirs = sorted(reference, key=key)
    assert [key(r) for r in ours] == [key(r) for r in theirs]
    for mine, real in zip(ours, theirs, strict=True):
        assert mine == real, key(mine)


def test_the_renderer_refuses_what_it_cannot_do(tmp_path: Any) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [missing.yaml]\n"
    )
    with pytest.raises(KustomizeError, match="does not exist"):
        build_kustomization(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nreplicas: []\n"
    )
    with pytest.raises(KustomizeError, match="lacks"):
        build_kustomization(tmp_path)


# --- schemas --------------------------------------------------------------------------


def core_resources() -> list[Resource]:
    found = []
    for kind in KINDS:
        found += [r for r in rendered(kind) if (r["apiVersion"], r["kind"]) not in SCHEMAS]
    found += load_yaml_docs(KUBE / "credentials-shape.example.yaml")
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_built_in_kinds_validate_strictly_against_kubernetes(version: str) -> None:
    resources = core_resources()
    assert {r["kind"] for r in resources} >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Namespace",
    }
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)


def test_kubernetes_validate_catches_a_misplaced_field() -> None:
    deployment = one(rendered("prison"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def crd_errors(resource: Resource) -> list[str]:
    schema = SCHEMAS[(resource["apiVersion"], resource["kind"])]
    validator = jsonschema_rs.validator_for(schema)
    return [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(resource)]


@pytest.mark.parametrize("kind", KINDS)
def test_custom_resources_match_their_schemas(kind: str) -> None:
    custom = [r for r in rendered(kind) if (r["apiVersion"], r["kind"]) in SCHEMAS]
    assert {(r["apiVersion"], r["kind"]) for r in custom} == set(SCHEMAS)
    for resource in custom:
        assert crd_errors(resource) == [], key(resource)


def test_the_custom_resource_schemas_catch_mistakes() -> None:
    resources = rendered("prison")
    cluster = one(resources, "Cluster")
    cluster["spec"]["instance"] = 3
    assert crd_errors(cluster)
    backup = one(resources, "ScheduledBackup")
    backup["spec"]["method"] = "barman"
    assert crd_errors(backup)
    rule = one(resources, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "an hour"
    assert crd_errors(rule)
    monitor = one(resources, "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["relabelings"][0]["sourceLabels"] = ["a.b"]
    assert crd_errors(monitor)


# --- the node -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_deployment_two_hardened_replicas_with_probes_and_requests(kind: str) -> None:
    resources = rendered(kind)
    deployment = one(resources, "Deployment", "handover")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    template = deployment["spec"]["template"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["initContainers"] + pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        assert container["image"] == "registry.example.org/handover:0.1.0"
    container = node_container(resources)
    assert container["args"] == ["serve", "--dir", "/var/lib/handover"]
    probes = {name: container[name] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in probes.values():
        # /healthz and /readyz live on the federation listener, which speaks TLS.
        assert probe["httpGet"]["port"] == "federation"
        assert probe["httpGet"]["scheme"] == "HTTPS"


@pytest.mark.parametrize("kind", KINDS)
def test_volumes_configmaps_and_secrets_all_exist(kind: str) -> None:
    resources = rendered(kind)
    pod = pod_spec(resources)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["initContainers"] + pod["containers"]:
        for mount in container["volumeMounts"]:
            assert mount["name"] in volumes, mount
    config_maps = {r["metadata"]["name"] for r in by_kind(resources, "ConfigMap")}
    cluster = one(resources, "Cluster")["metadata"]["name"]
    secrets_made_here = {f"{cluster}-app"}  # CloudNativePG's app-user Secret
    referenced_secrets = set()
    for volume in volumes.values():
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps
        if "secret" in volume:
            referenced_secrets.add(volume["secret"]["secretName"])
    for env in node_container(resources)["env"]:
        if "valueFrom" in env:
            referenced_secrets.add(env["valueFrom"]["secretKeyRef"]["name"])
    store = one(resources, "ObjectStore")["spec"]["configuration"]["s3Credentials"]
    referenced_secrets |= {store["accessKeyId"]["name"], store["secretAccessKey"]["name"]}
    assert referenced_secrets == OUT_OF_BAND_SECRETS | secrets_made_here
    examples = {
        s["metadata"]["name"]: s for s in load_yaml_docs(KUBE / "credentials-shape.example.yaml")
    }
    assert set(examples) == OUT_OF_BAND_SECRETS
    assert set(examples["handover-backup-s3"]["stringData"]) == {
        store["accessKeyId"]["key"],
        store["secretAccessKey"]["key"],
    }
    assert {"root.key", "storage.key", "keyset.json"} <= set(
        examples["handover-keys"]["stringData"]
    )
    # The node's key files are copied out of the Secret (the node writes there), into
    # a memory-backed volume.
    assert volumes["node"]["emptyDir"]["medium"] == "Memory"
    script = pod["initContainers"][0]["command"][-1]
    assert "/etc/handover/keys/" in script and "/var/lib/handover/keys" in script


@pytest.mark.parametrize("kind", KINDS)
def test_settings_match_the_node_and_the_manifests(kind: str) -> None:
    resources = rendered(kind)
    toml = settings(kind)
    assert toml["node"] == f"{kind}.example"
    assert toml["kind"] == kind
    known = set(NodeConfig.model_fields) - {"directory"}
    assert set(toml) <= known | PLANNED_SETTINGS, set(toml) - known - PLANNED_SETTINGS
    today = {k: v for k, v in toml.items() if k not in PLANNED_SETTINGS}
    config = NodeConfig.model_validate(today)
    assert config.public_url.startswith("https://")
    assert "dsn" not in toml  # HANDOVER_DSN comes from CloudNativePG's Secret
    (config_map,) = by_kind(resources, "ConfigMap")
    assert tomllib.loads(config_map["data"]["handover.toml"]) == toml

    container = node_container(resources)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert config.port == ports["federation"]
    assert int(toml["local_listen"].rpartition(":")[2]) == ports["local"]
    assert config.host == "0.0.0.0" and toml["local_listen"].startswith("0.0.0.0:")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    tls_files = {k: v for k, v in toml.items() if k.startswith("tls_")}
    assert set(tls_files) == {k for k in PLANNED_SETTINGS if k.startswith("tls_")}
    for path in tls_files.values():
        assert path.startswith(mounts["tls"] + "/"), path
        assert path.rpartition("/")[2] in {"tls.crt", "tls.key", "ca.crt"}
    env = {e["name"]: e for e in container["env"]}
    cluster = one(resources, "Cluster")["metadata"]["name"]
    assert env["HANDOVER_DSN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{cluster}-app",
        "key": "uri",
    }


def test_each_agency_has_its_own_node_namespace_and_backups() -> None:
    nodes = {settings(kind)["node"] for kind in KINDS}
    namespaces = {one(rendered(kind), "Namespace")["metadata"]["name"] for kind in KINDS}
    destinations = {
        one(rendered(kind), "ObjectStore")["spec"]["configuration"]["destinationPath"]
        for kind in KINDS
    }
    assert len(nodes) == len(namespaces) == len(destinations) == 3
    for kind in KINDS:
        namespace = one(rendered(kind), "Namespace")
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- services, disruption budget, network policy --------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_services_reach_the_right_ports(kind: str) -> None:
    resources = rendered(kind)
    pod_labels = one(resources, "Deployment")["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in node_container(resources)["ports"]}
    federation = one(resources, "Service", "handover-federation")
    local = one(resources, "Service", "handover-local")
    assert federation["spec"]["type"] == "LoadBalancer"
    assert local["spec"]["type"] == "ClusterIP"
    for service, port in ((federation, "federation"), (local, "local")):
        assert selects(service["spec"]["selector"], pod_labels)
        assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]
        assert port in port_names


@pytest.mark.parametrize("kind", KINDS)
def test_disruption_budget_keeps_a_replica(kind: str) -> None:
    resources = rendered(kind)
    deployment = one(resources, "Deployment")
    budget = one(resources, "PodDisruptionBudget")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(budget["spec"]["selector"]["matchLabels"], pod_labels)
    assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


@pytest.mark.parametrize("kind", KINDS)
def test_network_policies_open_federation_to_all_and_local_to_the_namespace(kind: str) -> None:
    resources = rendered(kind)
    pod_labels = one(resources, "Deployment")["spec"]["template"]["metadata"]["labels"]
    policies = [
        p
        for p in by_kind(resources, "NetworkPolicy")
        if selects(p["spec"]["podSelector"]["matchLabels"], pod_labels)
    ]
    assert policies, "no NetworkPolicy selects the node's pods"
    sources: dict[str, list[Any]] = {"federation": [], "local": []}
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                sources[port["port"]].append(rule.get("from"))
    # Federation: one rule with no `from`, i.e. from anywhere.
    assert sources["federation"] == [None]
    # Local: pods of this namespace, and Prometheus's pods in `monitoring` (for /metrics).
    namespace_only = [{"podSelector": {}}]
    scrape = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    assert sorted(sources["local"], key=str) == sorted([namespace_only, scrape], key=str)

    cluster = one(resources, "Cluster")["metadata"]["name"]
    (db_policy,) = [
        p
        for p in by_kind(resources, "NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": cluster}
    ]
    peers = [
        source.get("podSelector", {}).get("matchLabels")
        for rule in db_policy["spec"]["ingress"]
        for source in rule["from"]
    ]
    assert any(p and selects(p, pod_labels) for p in peers)


# --- PostgreSQL -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_postgres_three_instances_archived_and_backed_up_nightly(kind: str) -> None:
    resources = rendered(kind)
    cluster = one(resources, "Cluster")
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["imageName"].rpartition(":")[2].startswith("16")
    assert cluster["spec"]["affinity"]["enablePodAntiAffinity"] is True
    (plugin,) = cluster["spec"]["plugins"]
    assert plugin["isWALArchiver"] is True
    store = one(resources, "ObjectStore")
    assert plugin["parameters"]["barmanObjectName"] == store["metadata"]["name"]
    assert store["spec"]["configuration"]["destinationPath"] == f"s3://handover-backups/{kind}/"
    backup = one(resources, "ScheduledBackup")
    assert backup["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert backup["spec"]["method"] == "plugin"
    assert backup["spec"]["pluginConfiguration"]["name"] == plugin["name"]
    # CloudNativePG schedules have six fields, seconds first.
    assert len(backup["spec"]["schedule"].split()) == 6
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert initdb == {"database": "handover", "owner": "handover"}


# --- monitoring -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_service_monitor_scrapes_the_local_listener_with_the_node_label(kind: str) -> None:
    resources = rendered(kind)
    monitor = one(resources, "ServiceMonitor")
    selected = [
        s
        for s in by_kind(resources, "Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in selected] == ["handover-local"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in selected[0]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "node"
    label = "app.kubernetes.io/instance"
    source = "__meta_kubernetes_service_label_" + label.replace(".", "_").replace("/", "_")
    assert relabel["sourceLabels"] == [source]
    assert selected[0]["metadata"]["labels"][label] == settings(kind)["node"]


def test_prometheus_rule_carries_the_alerts_file_unchanged() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text("utf-8"))
    (rule,) = load_yaml_docs(KUBE / "base" / "prometheusrule.yaml")
    assert rule["spec"] == rules
    for kind in KINDS:
        assert one(rendered(kind), "PrometheusRule")["spec"] == rules
