"""Connection pool, embedded PostgreSQL and numbered migrations."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import asyncpg.pool

from handover.store.errors import Conflict, InvalidValue, StoreError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# pg_advisory_xact_lock keys: one writer at a time per node database.
AUDIT_LOCK = 0x68703161  # "hp1a"
MIGRATION_LOCK = 0x6870316D  # "hp1m"

Connection: TypeAlias = (
    "asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
)
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
R = TypeVar("R", bound="DataclassInstance")


# --- typed rows -------------------------------------------------------------------------
#
# Store functions hand other layers frozen dataclasses, never asyncpg records:
# each query selects columns named like the fields of its row class.


@functools.cache
def _field_names(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def _frozen(value: object) -> object:
    # PostgreSQL arrays arrive as lists; a frozen row holds tuples.
    return tuple(value) if isinstance(value, list) else value


def to_row(cls: type[R], record: asyncpg.Record, **nested: object) -> R:
    """`record` as a `cls`: one field per selected column of the same name (arrays
    as tuples); `nested` gives the fields that come from another query."""
    values = {name: _frozen(record[name]) for name in _field_names(cls) if name not in nested}
    return cls(**values, **nested)


def to_rows(cls: type[R], records: Iterable[asyncpg.Record]) -> list[R]:
    return [to_row(cls, r) for r in records]


class Deferred:
    """Writes to run at the end of a group commit, one `executemany` per statement.

    Statements run in the order each was first deferred (so an outbox row goes
    in before the deliveries that reference it). Only for plain inserts and
    upserts that no later job of the same commit reads back.
    """

    def __init__(self) -> None:
        self._groups: dict[str, list[tuple[Any, ...]]] = {}
        self._once: dict[str, None] = {}

    def add(self, sql: str, *args: Any) -> None:
        self._groups.setdefault(sql, []).append(args)

    def once(self, sql: str) -> None:
        """A statement without parameters that runs once however often it is deferred
        (a NOTIFY). These run last, together in one round trip: only for statements
        whose effect does not depend on their order (NOTIFY is sent at commit)."""
        self._once.setdefault(sql, None)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._groups.values()) + len(self._once)

    def mark(self) -> dict[str, int]:
        marked = {sql: len(rows) for sql, rows in self._groups.items()}
        marked.update({sql: -1 for sql in self._once})
        return marked

    def reset(self, mark: dict[str, int]) -> None:
        for sql in list(self._groups):
            if sql not in mark:
                del self._groups[sql]
            else:
                del self._groups[sql][mark[sql] :]
        self._once = {sql: None for sql in self._once if sql in mark}

    async def flush(self, conn: Connection) -> None:
        groups, self._groups = self._groups, {}
        once, self._once = self._once, {}
        for sql, rows in groups.items():
            if len(rows) == 1:
                await conn.execute(sql, *rows[0])
            else:
                await conn.executemany(sql, rows)
        if once:
            # No parameters: one simple query carries them all.
            await conn.execute(";\n".join(once))


async def write(conn: Connection, defer: Deferred | None, sql: str, *args: Any) -> None:
    """Run `sql` now, or defer it to the end of the group commit."""
    if defer is None:
        await conn.execute(sql, *args)
    else:
        defer.add(sql, *args)


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every numbered file in store/migrations, in order."""
    folder = resources.files("handover.store") / "migrations"
    found = []
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name, item.read_text("utf-8")))
    return sorted(found)


async def migrate(conn: Connection, available: list[tuple[int, str, str]] | None = None) -> int:
    """Apply every migration not yet recorded, in order; returns the schema version.

    A missing number below the highest applied one is applied too: branches of
    the project are merged with their own numbers, so a database that already
    has 012 may still lack 011.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_version")}
        for version, name, sql in migrations() if available is None else available:
            if version in applied:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name
            )
            applied.add(version)
    return max(applied, default=0)


class EmbeddedPostgres:
    """A PostgreSQL server in `pgdata`, started with the `pgserver` package.

    pgserver shares one server between the processes that use the same data
    directory and stops it when the last one leaves; it does not forget
    processes that were killed, so dead ones are pruned from its list first.
    """

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def _prune_dead_handles(self) -> None:
        path = self.pgdata / ".handle_pids.json"
        try:
            pids = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return
        alive = []
        for pid in pids:
            try:
                os.kill(int(pid), 0)
                alive.append(pid)
            except (ProcessLookupError, ValueError):
                continue
            except PermissionError:
                alive.append(pid)
        if alive != pids:
            path.write_text(json.dumps(alive))

    def start(self) -> str:
        """Start (or attach to) the server; returns an asyncpg DSN."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (services, CI): harmless.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server

        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prune_dead_handles()
        try:
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises assorted subprocess errors
            raise StoreError(f"embedded PostgreSQL in {self.pgdata} did not start: {exc}") from exc
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


CONNECT_TIMEOUT_S = 30.0

# Server settings for the embedded PostgreSQL, none of which trades durability:
# - wal_init_zero off: a new 16 MB WAL segment is not zero-filled first. A fresh
#   cluster has no used segments to recycle, so under load every ~1,300 packets
#   a committing backend stopped to write and fsync 16 MB while holding the WAL
#   lock: a 60-100 ms stall of every commit (docs/performance.md). PostgreSQL
#   documents the setting as safe; commits still wait for their WAL to be flushed.
EMBEDDED_SETTINGS = {"wal_init_zero": "off"}


async def tune_embedded(conn: Connection) -> None:
    """Apply EMBEDDED_SETTINGS where the server differs (ALTER SYSTEM, then reload)."""
    changed = False
    for name, value in EMBEDDED_SETTINGS.items():
        if await conn.fetchval("SELECT current_setting($1)", name) != value:
            await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # our constants
            changed = True
    if changed:
        await conn.execute("SELECT pg_reload_conf()")


def describe_dsn(dsn: str) -> str:
    """host:port/database of a DSN (URL or key=value form), never its password."""
    if "://" in dsn:
        try:
            url = urlsplit(dsn)
            host, port = url.hostname, url.port
        except ValueError:
            return "an unparsable DSN (check dsn in handover.toml)"
        query = dict(parse_qsl(url.query))
        host = host or query.get("host") or "localhost"
        database = url.path.lstrip("/") or query.get("dbname") or "(default database)"
        return f"{host}:{port or query.get('port') or 5432}/{database}"
    pairs = dict(part.split("=", 1) for part in dsn.split() if "=" in part)
    return (
        f"{pairs.get('host', 'localhost')}:{pairs.get('port', '5432')}"
        f"/{pairs.get('dbname', '(default database)')}"
    )


def _reason(exc: BaseException) -> str:
    """A one-line reason: the server's message or the error's kind (never the DSN)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc).splitlines()[0][:200]
    if isinstance(exc, ValueError):
        return "the DSN is malformed"
    return type(exc).__name__


def translate(exc: BaseException) -> BaseException:
    """asyncpg's error as the store's (other exceptions unchanged)."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return Conflict(f"already stored: {exc.constraint_name}")
    if isinstance(exc, asyncpg.DataError | asyncpg.exceptions._base.DataError):
        # The server's (a NUL in text) or the driver's (an int past int64).
        return InvalidValue(f"a value cannot be stored: {type(exc).__name__}")
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return StoreError(f"database error: {type(exc).__name__}")
    return exc


async def _keep_session(_conn: object) -> None:
    """Nothing to undo when a connection goes back to the pool.

    asyncpg still rolls back a transaction left open; its default reset query
    (``UNLISTEN *``, ``RESET ALL``, advisory unlock, ``CLOSE ALL``) is one more
    round trip per use, and this code leaves none of that state behind: locks
    are transaction-scoped (`pg_advisory_xact_lock`), no session setting is
    changed, cursors live inside transactions, and the one connection that
    LISTENs is held until the node stops.
    """


class Database:
    """The node's asyncpg pool."""

    def __init__(self, pool: Pool, embedded: EmbeddedPostgres | None) -> None:
        self.pool = pool
        self.embedded = embedded
        self._listener: Any = None
        self._callbacks: dict[str, Callable[[], object]] = {}
        self._closing = False
        self._reattach_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, dsn: str, pgdata: Path, *, min_size: int = 2, max_size: int = 10
    ) -> Database:
        """Connect to `dsn`, or start an embedded server in `pgdata` when dsn is empty,
        then run migrations.

        Raises:
            StoreError: the server cannot be reached or started.
        """
        embedded = None
        if not dsn:
            embedded = EmbeddedPostgres(pgdata)
            dsn = await asyncio.get_running_loop().run_in_executor(None, embedded.start)
        try:
            pool = await asyncio.wait_for(
                asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, reset=_keep_session),
                CONNECT_TIMEOUT_S,
            )
        except (
            OSError,
            TimeoutError,
            ValueError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
        ) as exc:
            if embedded is not None:
                embedded.stop()
            raise StoreError(
                f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {_reason(exc)}"
            ) from exc
        db = cls(pool, embedded)
        async with db.connection() as conn:
            await migrate(conn)
            if embedded is not None:
                await tune_embedded(conn)
        return db

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; asyncpg's errors become the store's as they leave it.

        Raises:
            Conflict: a unique constraint held. It is raised as the `async with`
                block exits, so catch it around the block, not inside it.
            StoreError: any other database error.
        """
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise translate(exc) from exc

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def ping(self) -> bool:
        try:
            async with self.connection() as conn:
                return bool(await conn.fetchval("SELECT 1") == 1)
        except (StoreError, OSError):
            return False

    async def listen(self, **callbacks: Callable[[], object]) -> None:
        """Call `callbacks[name]` on each NOTIFY of channel `handover_<name>` from any
        process on this database (outbox: new rows; peers: pins; keys: rotations).

        The listening connection is watched: when it dies (the database restarted
        or failed over), a new one is attached as soon as the database answers,
        and every callback is called once, since notifications may have been
        missed in between.
        """
        self._callbacks = callbacks
        self._closing = False
        await self._attach()

    async def _attach(self) -> None:
        listener = await self.pool.acquire()
        try:
            for name in self._callbacks:
                await listener.add_listener(f"handover_{name}", self._on_notify)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.pool.release(listener)
            raise
        listener.add_termination_listener(self._lost)
        self._listener = listener

    def _on_notify(self, _conn: object, _pid: int, channel: str, _payload: object) -> None:
        callback = self._callbacks.get(channel.removeprefix("handover_"))
        if callback is not None:
            callback()

    def _lost(self, _conn: object) -> None:
        if self._closing:
            return
        dead, self._listener = self._listener, None
        self._reattach_task = asyncio.get_running_loop().create_task(self._reattach(dead))

    async def _reattach(self, dead: Any = None) -> None:
        if dead is not None:  # its pool slot comes back (the pool reconnects it)
            with contextlib.suppress(Exception):
                await self.pool.release(dead)
        delay = 0.5
        while not self._closing:
            try:
                await self._attach()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(delay)
                # At most 2 s: a node hears its database again soon after it is back.
                delay = min(delay * 2, 2.0)
                continue
            for callback in self._callbacks.values():
                callback()
            return

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            with contextlib.suppress(Exception):
                for name in self._callbacks:
                    await self._listener.remove_listener(f"handover_{name}", self._on_notify)
                await self.pool.release(self._listener)
            self._listener = None
        await self.pool.close()
        if self.embedded is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.embedded.stop)
