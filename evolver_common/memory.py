"""Giving freed memory back to the operating system."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


def release_freed_memory() -> None:
    """Return the heap's free pages to the system (glibc's malloc_trim; a no-op elsewhere).

    glibc keeps memory that was freed for reuse; with buffers of varying sizes every generation
    (PNGs, pickled optimizer states) the resident size of a long run crept up by ~90 MB over 900
    generations without any leak. Trimming after each generation keeps it flat; it takes microseconds.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
