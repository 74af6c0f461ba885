"""The baseline receiver: what a team would build without handover.

A minimal aiohttp server with its own embedded PostgreSQL (pgserver, default
settings: fsync on, synchronous_commit on). Each `POST /ingest` parses the
JSON request and INSERTs it into a `jsonb` column as one autocommitted
statement, one durable commit per request, then answers 201 with the row id.
No authentication, signatures, encryption, schema validation, audit log or
receipts: the floor the handover figures are compared with.

    python bench/baseline_server.py --dir DIR --port PORT

Runs until SIGTERM or SIGINT, then stops its PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import warnings
from pathlib import Path

import asyncpg
from aiohttp import web

POOL_SIZE = 10  # the same as a handover node's pool
TABLE = (
    "CREATE TABLE IF NOT EXISTS ingest ("
    " id bigserial PRIMARY KEY,"
    " received_at timestamptz NOT NULL DEFAULT now(),"
    " doc jsonb NOT NULL)"
)
# `POST /upload`: a file streamed into PostgreSQL in 1 MiB rows, one commit each,
# the storage layout of handover's attachments, without encryption, tickets or hashes.
BLOBS = (
    "CREATE TABLE IF NOT EXISTS blobs ("
    " id bigint NOT NULL, start bigint NOT NULL, data bytea NOT NULL,"
    " PRIMARY KEY (id, start));"
    "ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;"
    "CREATE SEQUENCE IF NOT EXISTS blob_ids"
)
PIECE = 1024 * 1024
POOL_KEY: web.AppKey[asyncpg.Pool] = web.AppKey("pool")


async def upload(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    blob = await pool.fetchval("SELECT nextval('blob_ids')")
    position = 0
    pending = bytearray()

    async def store(data: bytes) -> None:
        nonlocal position
        await pool.execute(
            "INSERT INTO blobs (id, start, data) VALUES ($1, $2, $3)", blob, position, data
        )
        position += len(data)

    while chunk := await request.content.readany():
        pending += chunk
        while len(pending) >= PIECE:
            await store(bytes(pending[:PIECE]))
            del pending[:PIECE]
    if pending:
        await store(bytes(pending))
    return web.json_response({"id": blob, "size": position}, status=201)


async def ingest(request: web.Request) -> web.Response:
    raw = await request.read()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return web.json_response({"error": "not JSON"}, status=400)
    if not isinstance(doc, dict):
        return web.json_response({"error": "not a JSON object"}, status=400)
    row_id = await request.app[POOL_KEY].fetchval(
        "INSERT INTO ingest (doc) VALUES ($1::jsonb) RETURNING id", raw.decode("utf-8")
    )
    return web.json_response({"id": row_id}, status=201)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve(directory: Path, port: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from pgserver import get_server

    directory.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    server = await loop.run_in_executor(None, get_server, directory / "pgdata", "stop")
    try:
        pool = await asyncpg.create_pool(server.get_uri(), min_size=2, max_size=POOL_SIZE)
        await pool.execute(TABLE)
        await pool.execute(BLOBS)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app[POOL_KEY] = pool
        app.router.add_post("/ingest", ingest)
        app.router.add_post("/upload", upload)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"baseline listening on 127.0.0.1:{port}", flush=True)
        await stop.wait()
        await runner.cleanup()
        await pool.close()
    finally:
        await loop.run_in_executor(None, server.cleanup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args()
    asyncio.run(serve(args.dir.resolve(), args.port))


if __name__ == "__main__":
    main()
