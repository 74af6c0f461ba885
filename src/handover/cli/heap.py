"""How `handover serve` keeps large packet buffers out of the C heap."""

from __future__ import annotations

import ctypes
import sys


def bound_native_heap() -> None:
    """Keep large packet buffers out of the C heap (glibc only).

    glibc raises its mmap threshold each time a large block is freed, after
    which buffers of a few hundred KiB come from the heap and its memory is not
    given back: with large packets a node's RSS then keeps the high-water mark
    of every copy it ever held (measured in bench/: 650 MB against 393 MB). A
    fixed 128 KiB threshold keeps such buffers mapped and returned when freed.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (also stops its adjustment)
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # another C library: leave its defaults
        return
