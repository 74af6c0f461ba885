"""Node settings: `DIR/handover.toml`, with environment overrides (HANDOVER_*)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
    public_url: str = ""
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
    policy_file: str = ""
    directory: Path = Path(".")

    @field_validator("node")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not is_node_id(value):
            raise ValueError("node must be a lowercase DNS-style name")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError("listen must be HOST:PORT")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def url(self) -> str:
        """The URL peers use to reach this node."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    @property
    def keys_dir(self) -> Path:
        return self.directory / "keys"

    @property
    def pgdata(self) -> Path:
        return self.directory / "pgdata"


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
    """Read `DIR/handover.toml`; HANDOVER_DSN / HANDOVER_LISTEN override the file.

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
    for key in ("dsn", "listen", "public_url", "log_format", "log_level"):
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
