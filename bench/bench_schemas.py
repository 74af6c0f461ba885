"""How much compiling each schema once buys on the packet path.

Validates the ~2 KiB release-notice benchmark body (the schema's first example)
N times with the registry's compiled validator, then N times compiling a fresh
validator per call, and prints the mean microseconds per call and the ratio.

    python bench/bench_schemas.py [N]       # default 20000
"""

from __future__ import annotations

import json
import sys
import time

import jsonschema_rs

from handover.workflow.schemas import SchemaRegistry

SCHEMA_ID = "handover/release-notice/1"


def main(calls: int = 20_000) -> None:
    registry = SchemaRegistry.load()
    body = registry.examples(SCHEMA_ID)[0]
    size = len(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    documents = [registry.document(schema_id) for schema_id in registry.ids()]
    resources = jsonschema_rs.Registry([(doc["$id"], doc) for doc in documents])
    document = registry.document(SCHEMA_ID)

    def fresh_validate() -> None:
        # What validation costs without the registry: compile, then check (same options).
        validator = jsonschema_rs.Draft202012Validator(
            document, registry=resources, validate_formats=True, offline=True
        )
        validator.validate(body)

    for _ in range(min(calls, 500)):  # warm caches
        registry.validate(SCHEMA_ID, body)
        fresh_validate()

    start = time.perf_counter()
    for _ in range(calls):
        registry.validate(SCHEMA_ID, body)
    compiled_us = (time.perf_counter() - start) / calls * 1e6

    start = time.perf_counter()
    for _ in range(calls):
        fresh_validate()
    fresh_us = (time.perf_counter() - start) / calls * 1e6

    print(f"body: {SCHEMA_ID} example 1, {size} bytes of canonical JSON; {calls} calls each")
    print(f"compiled once (SchemaRegistry.validate): {compiled_us:9.2f} us/call")
    print(f"compiled per call:                       {fresh_us:9.2f} us/call")
    print(f"ratio (per call / once):                 {fresh_us / compiled_us:9.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
