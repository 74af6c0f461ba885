"""deploy/compose.yaml: three agencies, each with its own PostgreSQL 16 on a network
of its own, TLS material from the demo CA, local APIs on the host's loopback only.

Checked structurally (no compose engine runs here). If the `compose_spec` package
(Python bindings of the compose_spec Rust crate) is installed, the file is also
validated against the Compose specification; it is not a dev dependency."""

from __future__ import annotations

import re
from typing import Any

import yaml
from deploy_support import DEPLOY, MONITORING

AGENCIES = {"prison": "prison.example", "probation": "probation.example", "exit": "exit.example"}
LOCAL_PORTS = {"prison": 8581, "probation": 8582, "exit": 8583}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))


def interpolate(text: str) -> str:
    """Compose's ${NAME:-default} with nothing set: the defaults."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def test_three_agencies_each_with_its_own_postgres_16() -> None:
    services = compose()["services"]
    nodes = {name for name in services if name in AGENCIES}
    assert nodes == set(AGENCIES)
    for agency in AGENCIES:
        db = services[f"{agency}-db"]
        assert db["image"] == "docker.io/library/postgres:16"
        assert db["networks"] == [f"{agency}-internal"]
        assert "pg_isready" in db["healthcheck"]["test"]
        assert db["volumes"] == [f"{agency}-pg:/var/lib/postgresql/data"]
        dsn = interpolate(services[agency]["environment"]["HANDOVER_DSN"])
        password = interpolate(db["environment"]["POSTGRES_PASSWORD"])
        assert dsn == f"postgresql://handover:{password}@{agency}-db:5432/handover"
        assert services[agency]["depends_on"][f"{agency}-db"]["condition"] == "service_healthy"


def test_databases_are_reachable_by_their_own_node_only() -> None:
    spec = compose()
    services = spec["services"]
    for agency in AGENCIES:
        network = f"{agency}-internal"
        assert spec["networks"][network]["internal"] is True
        members = {
            name for name, service in services.items() if network in (service.get("networks") or [])
        }
        assert members == {agency, f"{agency}-db"}


def test_nodes_talk_tls_on_the_federation_network_under_their_ids() -> None:
    spec = compose()
    services = spec["services"]
    for agency, node in AGENCIES.items():
        service = services[agency]
        assert service["networks"]["federation"]["aliases"] == [node]
        init = services[f"{agency}-init"]
        assert init["environment"] == {"NODE": node, "KIND": agency}
        assert f"./tls/demo/{node}:/tls:ro" in init["volumes"]
        assert init["network_mode"] == "none"
        assert service["depends_on"][f"{agency}-init"] == {
            "condition": "service_completed_successfully"
        }
        volume = f"{agency}-data:/var/lib/handover"
        assert init["volumes"][0] == volume and service["volumes"] == [volume]
    script = (DEPLOY / "compose" / "init-node.sh").read_text("utf-8")
    # The settings the node gets (issue 10's interface, planned).
    for flag in ("--tls-cert", "--tls-key", "--local-listen 0.0.0.0:8480", "--listen 0.0.0.0:8443"):
        assert flag in script, flag
    for setting in ("tls_client_ca", "tls_client_cert", "tls_client_key"):
        assert f"{setting} = " in script
    assert '--public-url "https://$NODE:8443"' in script
    pin = (DEPLOY / "compose" / "pin-peers.sh").read_text("utf-8")
    assert '--url "https://$peer.example:8443"' in pin and '--ca "$dir/tls/ca.crt"' in pin


def test_only_loopback_ports_are_published() -> None:
    services = compose()["services"]
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
            published[name] = port
    for agency, host_port in LOCAL_PORTS.items():
        # The local listener (local_listen 0.0.0.0:8480 inside the container).
        assert published[agency] == f"127.0.0.1:{host_port}:8480"
    assert set(published) == set(AGENCIES) | {"prometheus", "grafana"}


def test_nodes_run_locked_down_with_a_health_check() -> None:
    services = compose()["services"]
    for agency in AGENCIES:
        service = services[agency]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["healthcheck"]["test"] == ["CMD", "handover-healthcheck"]
        assert service["command"] == ["serve", "--dir", "/var/lib/handover"]
        assert service["build"]["dockerfile"] == "deploy/container/Containerfile"
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_monitoring_profile_uses_the_monitoring_files() -> None:
    spec = compose()
    for name in ("prometheus", "grafana"):
        service = spec["services"][name]
        assert service["profiles"] == ["monitoring"]
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source
    scrape = yaml.safe_load((MONITORING / "prometheus.yml").read_text("utf-8"))
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yaml"]
    (job,) = scrape["scrape_configs"]
    targets = {c["targets"][0]: c["labels"]["node"] for c in job["static_configs"]}
    assert targets == {f"{agency}:8480": node for agency, node in AGENCIES.items()}


def test_every_named_volume_and_network_is_declared() -> None:
    spec = compose()
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in spec["volumes"], (name, source)
        networks = service.get("networks") or []
        for network in networks:
            assert network in spec["networks"], (name, network)
