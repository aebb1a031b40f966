"""Keep the C allocator from returning large freed buffers to the system after every file chunk.

A file transfer makes and drops a few 256 KiB buffers per chunk (the file's bytes, the padded message, the sealed
frame, the received frame). glibc serves blocks that large with ``mmap`` and trims the top of its heap once
128 KiB … 512 KiB are free, so every chunk used to map fresh pages, fault them in, zero them and unmap them
again; in a process with several threads each unmap also interrupts the other cores (a TLB shoot-down). That
cost more than the encryption itself. :func:`keep_freed_buffers` raises both thresholds once per process so those
buffers are reused from the heap. A process keeps at most :data:`TRIM_THRESHOLD` of freed memory per arena.
Only glibc is tuned; elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys
import threading

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 4 * 1024 * 1024       # blocks up to this size come from the heap (a frame is at most 2 MiB)
TRIM_THRESHOLD = 32 * 1024 * 1024      # free memory at the top of a heap kept for reuse
_M_TRIM_THRESHOLD = -1                 # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3

_done = False
_lock = threading.Lock()


def keep_freed_buffers() -> bool:
    """Tune glibc's allocator for bulk transfers (once per process); True when it was tuned."""
    global _done
    with _lock:
        if _done:
            return True
        if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
            return False
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
        _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        if not _done:
            log.info("could not tune the C allocator for file transfers (mallopt refused)")
        return _done


__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_buffers"]
