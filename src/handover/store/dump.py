"""Whole-database dumps for `handover backup` and `handover restore`.

`pg_dump` (plain SQL, one consistent snapshot, so it runs while the node
writes) and `psql` (loading it in one transaction) come from the `pgserver`
package, the PostgreSQL the embedded database runs on, or else from PATH.
A DSN's password goes to them in the environment (PGPASSWORD), never on the
command line, where other users of the machine could read it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from handover.store.db import CONNECT_TIMEOUT_S, describe_dsn
from handover.store.errors import StoreError

READ_CHUNK = 256 * 1024


def pg_tool(name: str) -> str:
    """The path of a PostgreSQL client program (`pg_dump`, `psql`).

    Raises:
        StoreError: neither pgserver nor PATH has it.
    """
    try:
        import pgserver

        candidate = Path(pgserver.__file__).parent / "pginstall" / "bin" / name
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which(name)
    if found is None:
        raise StoreError(f"{name} not found: install the pgserver package or PostgreSQL's client")
    return found


def split_password(dsn: str) -> tuple[str, str | None]:
    """The DSN without its password, and the password (URL or key=value form)."""
    if "://" in dsn:
        url = urlsplit(dsn)
        userinfo, at, hostport = url.netloc.rpartition("@")
        if not at or ":" not in userinfo:
            return dsn, None
        user, _, password = userinfo.partition(":")
        netloc = f"{user}@{hostport}" if user else hostport
        return urlunsplit(url._replace(netloc=netloc)), unquote(password) or None
    parts = dsn.split()
    kept = [p for p in parts if not p.startswith("password=")]
    secret = [p.split("=", 1)[1] for p in parts if p.startswith("password=")]
    return " ".join(kept), (secret[-1] if secret else None)


def _env(password: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if password:
        env["PGPASSWORD"] = password
    return env


def _first_line(stream: IO[bytes]) -> str:
    stream.seek(0)
    lines = [ln for ln in stream.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[0][:300] if lines else "no message"


def dump(dsn: str) -> Iterator[bytes]:
    """The database at `dsn` as plain SQL, in chunks, from one snapshot.

    Raises:
        StoreError: pg_dump failed (its first error line, never the DSN).
    """
    target, password = split_password(dsn)
    argv = [pg_tool("pg_dump"), "--format=plain", "--no-owner", "--no-privileges"]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [*argv, f"--dbname={target}"],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=_env(password),
        )
        assert proc.stdout is not None
        complete = False
        try:
            while chunk := proc.stdout.read(READ_CHUNK):
                yield chunk
            complete = True
        finally:
            if not complete:
                proc.kill()  # the caller stopped reading early
            proc.stdout.close()
            code = proc.wait()
        if code != 0:
            raise StoreError(f"pg_dump of {describe_dsn(dsn)} failed: {_first_line(errors)}")


class Loader:
    """psql loading a plain SQL dump into `dsn` in ONE transaction: all or nothing.

    Feed it with :meth:`write`, then :meth:`finish`; :meth:`abort` rolls back.
    """

    def __init__(self, dsn: str) -> None:
        self._described = describe_dsn(dsn)
        target, password = split_password(dsn)
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by finish or abort)
        self._proc = subprocess.Popen(
            [
                pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                f"--dbname={target}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._errors,
            env=_env(password),
        )  # fmt: skip

    def write(self, chunk: bytes) -> None:
        """Raises StoreError: psql stopped (an error in the dump, or the server)."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(chunk)
        except BrokenPipeError as exc:
            self._proc.wait()
            raise StoreError(
                f"loading into {self._described} failed: {_first_line(self._errors)}"
            ) from exc

    def finish(self) -> None:
        """Commit. Raises StoreError: psql failed (the transaction rolled back)."""
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        code = self._proc.wait()
        try:
            if code != 0:
                raise StoreError(
                    f"loading into {self._described} failed: {_first_line(self._errors)}"
                )
        finally:
            self._errors.close()

    def abort(self) -> None:
        """Stop psql before it commits: nothing of the dump stays."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        with contextlib.suppress(OSError, BrokenPipeError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        self._errors.close()


async def is_empty(dsn: str) -> bool:
    """True when the database at `dsn` has no tables, views or sequences of its own.

    Raises:
        StoreError: it cannot be reached.
    """
    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError) as exc:
        raise StoreError(
            f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {type(exc).__name__}"
        ) from exc
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'"
        )
    finally:
        await conn.close()
    return int(count) == 0
