"""Node settings: `DIR/handover.toml`, with environment overrides (HANDOVER_*)."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from handover.protocol.errors import ConfigError
from handover.protocol.keyset import is_node_id

CONFIG_FILE = "handover.toml"
AgencyKind = Literal["prison", "probation", "exit"]
AGENCY_KINDS: tuple[AgencyKind, ...] = ("prison", "probation", "exit")


class NodeConfig(BaseModel):
    """Everything a node needs to start. Paths are relative to the node directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str
    kind: AgencyKind
    listen: str = "127.0.0.1:8480"
    # The local API, metrics and the web interface listen here; empty: on
    # `listen` too, which is allowed only for a loopback `listen`.
    local_listen: str = ""
    public_url: str = ""
    # TLS on the federation listener (PEM files, relative to the node directory).
    tls_cert: str = ""
    tls_key: str = ""
    # Mutual TLS: federation POSTs need a client certificate from this CA.
    tls_client_ca: str = ""
    # What this node presents when it connects out (default: its server certificate).
    tls_client_cert: str = ""
    tls_client_key: str = ""
    dsn: str = ""
    ttl_days: int = Field(default=14, ge=1, le=30)
    log_format: Literal["json", "console", "auto"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    delivery_batch: int = Field(default=256, ge=1, le=256)
    delivery_concurrency: int = Field(default=8, ge=1, le=64)
    delivery_timeout_s: float = Field(default=30.0, gt=0)
    retry_base_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=600.0, gt=0)
    checkpoint_check_s: float = Field(default=86400.0, gt=0)
    # Attachments (docs/protocol.md section 8): the largest stream one attachment
    # may have, and the bytes of incomplete uploads one peer may hold here.
    max_attachment_bytes: int = Field(default=1024**3, ge=41)
    attachment_quota_bytes: int = Field(default=4 * 1024**3, ge=41)
    # A command that reads a received attachment's plaintext on stdin and exits
    # 0 (clean) or 1 (infected: quarantined), e.g. "clamdscan --fdpass -".
    # Empty: no scan, attachments are readable once their packet is accepted.
    attachment_scan_command: str = ""
    policy_file: str = ""
    # Subject access (LED Art 13-15): what every export states, and what it may
    # quote. Staff are named by role unless `subject_name_staff` is true.
    subject_legal_basis: str = Field(default="", max_length=2000)
    supervisory_authority: str = Field(default="", max_length=2000)
    subject_quote_third_party: bool = False
    subject_name_staff: bool = False
    # Least privilege (Art 20, 29): `required` lets a caseworker see only cases
    # assigned to them or their team (new nodes: `handover init` writes it);
    # `off` keeps every case visible to every caseworker.
    case_assignment: Literal["required", "off"] = "off"
    directory: Path = Path(".")

    @field_validator("node")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not is_node_id(value):
            raise ValueError("node must be a lowercase DNS-style name")
        return value

    @field_validator("listen", "local_listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        if value == "":
            return value
        split_address(value)
        return value

    @field_validator("tls_key")
    @classmethod
    def _tls_pair(cls, value: str, info: ValidationInfo) -> str:
        if bool(value) != bool(info.data.get("tls_cert")):
            raise ValueError("tls_cert and tls_key go together")
        return value

    @property
    def host(self) -> str:
        return split_address(self.listen)[0]

    @property
    def port(self) -> int:
        return split_address(self.listen)[1]

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def url(self) -> str:
        """The URL peers use to reach this node."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return address_url("https" if self.tls else "http", self.listen)

    @property
    def local_url(self) -> str:
        """The URL of the local API (what CLI commands and integrators use)."""
        if self.local_listen:
            return address_url("http", self.local_listen)
        return address_url("https" if self.tls else "http", self.listen)

    def path(self, name: str) -> Path:
        """A setting's file, relative to the node directory."""
        return self.directory / name

    @property
    def keys_dir(self) -> Path:
        return self.directory / "keys"

    @property
    def pgdata(self) -> Path:
        return self.directory / "pgdata"


def split_address(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 hosts in brackets) as (host, port).

    Raises:
        ValueError: not HOST:PORT with a port of 0 to 65535.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("an address is HOST:PORT")
    return host.strip("[]"), int(port)


def address_url(scheme: str, address: str) -> str:
    host, port = split_address(address)
    return f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}"


def is_loopback(address: str) -> bool:
    host = split_address(address)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_config(directory: Path, settings: dict[str, object]) -> Path:
    """Write `DIR/handover.toml` (refusing to overwrite an existing one)."""
    path = directory / CONFIG_FILE
    if path.exists():
        raise ConfigError(f"{path} already exists; refusing to overwrite it")
    lines = ["# handover node settings; see README.md", ""]
    lines += [f"{key} = {_toml_value(value)}" for key, value in settings.items() if value != ""]
    # The DSN may hold a password: owner-only, like the key files.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    return path


def load_config(directory: Path) -> NodeConfig:
    """Read `DIR/handover.toml`; the environment variables HANDOVER_DSN,
    HANDOVER_LISTEN, HANDOVER_LOCAL_LISTEN, HANDOVER_PUBLIC_URL,
    HANDOVER_LOG_FORMAT and HANDOVER_LOG_LEVEL override the file.

    Raises:
        ConfigError: missing file or invalid settings (the message names the setting).
    """
    path = directory / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} not found; run `handover init` first") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    for key in ("dsn", "listen", "local_listen", "public_url", "log_format", "log_level"):
        env = os.environ.get(f"HANDOVER_{key.upper()}")
        if env is not None:
            raw[key] = env
    raw["directory"] = directory.resolve()
    try:
        return NodeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
