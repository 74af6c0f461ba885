"""deploy/monitoring: the alert rules and the Grafana dashboard parse, their PromQL
parses, they read only metrics the node exports (today or as planned in issue 10),
and the alerts issue 10 asks for are there; yamllint passes on every YAML file in
deploy/; the documentation they point to exists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import (
    DEPLOY,
    MONITORING,
    OPERATIONS,
    known_series,
    markdown_anchors,
    promql_series,
)
from yamllint import linter
from yamllint.config import YamlLintConfig

DURATION = re.compile(r"^(\d+[smhdwy])+$")


def rules() -> list[dict[str, Any]]:
    spec = yaml.safe_load((MONITORING / "alerts.yaml").read_text("utf-8"))
    (group,) = spec["groups"]
    return list(group["rules"])


def rule(name: str) -> dict[str, Any]:
    (found,) = [r for r in rules() if r["alert"] == name]
    return found


def numbers(expr: str) -> set[float]:
    """Every number literal in a PromQL expression, with products folded (48 * 3600)."""
    import promql_parser

    found: set[float] = set()

    def visit(node: Any) -> float | None:
        if isinstance(node, promql_parser.NumberLiteral):
            found.add(node.val)
            return float(node.val)
        if isinstance(node, promql_parser.BinaryExpr):
            left, right = visit(node.lhs), visit(node.rhs)
            if left is not None and right is not None and str(node.op) in ("*", "TokenType.MUL"):
                found.add(left * right)
            return None
        for attr in ("expr", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, str | int | float):
                visit(child)
        for child in getattr(node, "args", None) or []:
            visit(child)
        return None

    visit(promql_parser.parse(expr))
    return found


def test_the_alerts_issue_10_asks_for_are_there() -> None:
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names))
    assert set(names) >= {
        "HandoverPeerUnreachable",
        "HandoverDeadLetters",
        "HandoverPeerKeysetExpiring",
        "HandoverAuditChainBroken",
        "HandoverOutboxStale",
    }
    # Peer unreachable for an hour: no success for 3600 s while failures keep coming.
    unreachable = rule("HandoverPeerUnreachable")["expr"]
    assert promql_series(unreachable) == {
        "handover_peer_last_success_timestamp_seconds",
        "handover_peer_failures_total",
    }
    assert 3600 in numbers(unreachable)
    assert promql_series(rule("HandoverDeadLetters")["expr"]) == {"handover_dead_letters_total"}
    keyset = rule("HandoverPeerKeysetExpiring")["expr"]
    assert promql_series(keyset) == {"handover_peer_keyset_expiry_timestamp_seconds"}
    assert 48 * 3600 in numbers(keyset)
    chain = rule("HandoverAuditChainBroken")["expr"]
    assert promql_series(chain) == {"handover_audit_chain_ok"}
    assert 0 in numbers(chain)
    outbox = rule("HandoverOutboxStale")["expr"]
    assert promql_series(outbox) == {"handover_outbox_oldest_age_seconds"}
    assert 3600 in numbers(outbox)


def test_every_rule_is_complete_and_parses() -> None:
    anchors = markdown_anchors(OPERATIONS)
    for entry in rules():
        name = entry["alert"]
        assert set(entry) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert promql_series(entry["expr"]) <= known_series(), name
        if "for" in entry:
            assert DURATION.match(entry["for"]), name
        assert entry["labels"]["severity"] in {"critical", "warning"}, name
        annotations = entry["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), name
        page, _, anchor = annotations["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor in anchors, (name, anchor)
        # Per-peer series are grouped by peer, everything by the node it came from.
        if "peer" in entry["expr"]:
            assert "{{ $labels.peer }}" in annotations["summary"], name
        assert "{{ $labels.node }}" in annotations["summary"] or name == "HandoverNodeDown"


def test_promql_checks_do_catch_mistakes() -> None:
    with pytest.raises(ValueError):
        promql_series("sum(rate(handover_dead_letters_total[1h])")
    assert not promql_series("handover_dead_leters_total > 0") <= known_series()


# --- the dashboard --------------------------------------------------------------------

GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$node": "prison.example",
}


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text("utf-8"))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found += panel.get("panels", [])
    return found


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "handover-node" and board["title"]
    assert isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "label_values" in variables["node"]["definition"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    # No two panels overlap.
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_dashboard_queries_parse_and_cover_the_planned_metrics() -> None:
    read: set[str] = set()
    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, expr
            series = promql_series(expr)
            assert series <= known_series(), (panel["title"], series - known_series())
            read |= series
    bases = {re.sub(r"_(bucket|sum|count)$", "", name) for name in read}
    planned = {
        "handover_peer_delivery_seconds",
        "handover_peer_failures_total",
        "handover_peer_last_success_timestamp_seconds",
        "handover_peer_keyset_expiry_timestamp_seconds",
        "handover_dead_letters_total",
        "handover_outbox_oldest_age_seconds",
        "handover_byte_budget_in_use_bytes",
        "handover_audit_chain_ok",
    }
    assert planned <= bases
    assert {"handover_outbox_depth", "handover_packets_sent_total"} <= bases


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    provider = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "handover.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert source["datasources"][0]["type"] == "prometheus"


# --- yamllint, for every YAML file in deploy/ -----------------------------------------

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def lint_config() -> YamlLintConfig:
    return YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))


def test_yaml_files_are_found() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"compose.yaml", "monitoring/alerts.yaml", "kubernetes/base/deployment.yaml"} <= names
    assert len(names) >= 25


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_yamllint(path: Path) -> None:
    problems = list(linter.run(path.read_text("utf-8"), lint_config(), str(path)))
    assert problems == [], "\n".join(f"{p.line}:{p.column} {p.desc} ({p.rule})" for p in problems)


def test_yamllint_does_flag_problems() -> None:
    bad = "key: value\nkey: other\nlist:\n- a\n-  b\n"
    assert list(linter.run(bad, lint_config()))


# --- documentation --------------------------------------------------------------------


def test_deploy_readme_points_to_the_operations_guide() -> None:
    readme = (DEPLOY / "README.md").read_text("utf-8")
    assert "docs/operations.md" in readme


def test_operations_guide_has_its_sections() -> None:
    anchors = markdown_anchors(OPERATIONS)
    for section in (
        "install-with-pip",
        "container",
        "kubernetes",
        "systemd",
        "tls-and-listeners",
        "dsn-and-replicas",
        "monitoring-and-alerts",
        "backup-and-restore",
        "key-rotation-and-revocation",
        "upgrades",
    ):
        assert section in anchors, section


def test_files_the_guide_names_exist() -> None:
    text = OPERATIONS.read_text("utf-8")
    root = DEPLOY.parent
    for path in set(re.findall(r"`(deploy/[\w./@-]+)`", text)):
        assert (root / path.rstrip("/")).exists(), path
