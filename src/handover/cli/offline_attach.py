"""Attachments for the offline packet tools (`packet seal --attach --out`,
`packet open --attachments --save`): each stream is a file `AID.att` beside
the packet, written and read in pieces so no file is held in memory."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from handover.cli.output import CliError
from handover.protocol import crypto
from handover.protocol.attachments import (
    MAX_ATTACHMENTS,
    AttachmentError,
    AttachmentItem,
    StreamDecryptor,
    StreamEncryptor,
    media_type_for,
    name_ok,
    new_aid,
)

READ_BYTES = 1024 * 1024


def _create(path: Path) -> Any:
    """A new file, 0600, refusing to replace one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise CliError(f"{path} exists: not replacing it") from exc
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from exc
    return os.fdopen(fd, "wb")


def encrypt_files(paths: list[str], out: Path) -> list[AttachmentItem]:
    """Encrypt each file into OUT/AID.att; the items for the packet's `att`."""
    if len(paths) > MAX_ATTACHMENTS:
        raise CliError(f"at most {MAX_ATTACHMENTS} attachments")
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for path in paths:
        name = Path(path).name
        if not name_ok(name):
            raise CliError(f"{path}: the file name cannot be an attachment name")
        aid = new_aid()
        enc = StreamEncryptor(aid, crypto.random_bytes(crypto.STREAM_KEY_BYTES))
        try:
            with open(path, "rb") as src, _create(out / f"{aid}.att") as dst:
                while data := src.read(READ_BYTES):
                    dst.write(enc.update(data))
                dst.write(enc.finish())
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from exc
        items.append(enc.item(name, media_type_for(name)))
    return items


def _target(save: Path, item: AttachmentItem, taken: set[str]) -> Path:
    name = item.name
    if name in (".", "..") or name in taken:
        raise CliError(f"attachment {item.aid}: its name cannot be saved as given")
    taken.add(name)
    target = save / name
    if target.exists():
        raise CliError(f"{target} exists: not replacing it")
    return target


def open_streams(
    items: tuple[AttachmentItem, ...], streams: Path, save: Path
) -> list[dict[str, Any]]:
    """Check and decrypt every stream into SAVE/NAME. Each is written to a
    temporary file first; if any stream fails a check, every temporary file is
    removed and nothing is saved."""
    save.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    targets = [_target(save, item, taken) for item in items]
    temps: list[Path] = []
    try:
        for item in items:
            temp = save / f".{item.aid}.part"
            temps.append(temp)
            dec = StreamDecryptor(item)
            try:
                with open(streams / f"{item.aid}.att", "rb") as src, _create(temp) as dst:
                    while data := src.read(READ_BYTES):
                        dst.write(dec.update(data))
                    dst.write(dec.finish())
            except FileNotFoundError as exc:
                raise CliError(f"attachment {item.aid}: {item.aid}.att is missing") from exc
            except AttachmentError as exc:
                raise CliError(f"attachment {item.aid} refused: {exc}") from exc
        for temp, target in zip(temps, targets, strict=True):
            temp.rename(target)
        temps = []
    finally:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
    return [
        {"aid": i.aid, "name": i.name, "type": i.type, "size": i.size, "saved": str(t)}
        for i, t in zip(items, targets, strict=True)
    ]


def describe(items: tuple[AttachmentItem, ...]) -> list[dict[str, Any]]:
    return [{"aid": i.aid, "name": i.name, "type": i.type, "size": i.size} for i in items]
