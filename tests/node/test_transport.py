"""Batching of outgoing packets: request-sized chunks, order kept."""

from __future__ import annotations

from handover.node.transport import MAX_BATCH, MAX_BATCH_BYTES
from handover.node.transport import chunks as _chunks


def test_chunks_keep_order_and_respect_count_and_size_limits() -> None:
    small = [bytes([i % 256]) * 100 for i in range(600)]
    chunks = _chunks(small)
    assert [len(c) for c in chunks] == [MAX_BATCH, MAX_BATCH, 600 - 2 * MAX_BATCH]
    assert [w for c in chunks for w in c] == small

    big = [b"x" * (6 * 1024 * 1024) for _ in range(5)]
    chunks = _chunks(big)
    assert all(sum(len(w) for w in c) <= MAX_BATCH_BYTES for c in chunks)
    assert [len(c) for c in chunks] == [2, 2, 1]


def test_a_packet_larger_than_a_batch_travels_alone() -> None:
    huge = [b"a", b"b" * (MAX_BATCH_BYTES + 10), b"c"]
    assert [len(c) for c in _chunks(huge)] == [1, 1, 1]
