"""Reused memory for the large per-call arrays (caches, outputs, packed inputs).

Why: every forward allocates a few arrays of R x (gates * H) and glibc hands big blocks back
to the OS when they are freed, so the next call page-faults them in again, and those page
faults cost more than the forward's own work (figures in docs/performance.md). PyTorch's CPU
allocator does not cache.

How: blocks of at least MIN_POOLED_BYTES are kept in a small pool after use. A block is
handed out again only when nothing outside the pool refers to it any more: every array a
caller holds (the cache, an output, any view of them) keeps a reference to its block, which
``sys.getrefcount`` sees. So reuse can never overwrite an array someone still holds.
At most MAX_BLOCKS blocks and MAX_IDLE_BYTES of blocks nobody uses are kept (checked when
a block is added); ``release_memory()`` drops the unused ones.
"""

import sys
import threading

import numpy as np

# glibc's malloc maps blocks from 128 KB (M_MMAP_THRESHOLD's default) fresh from the OS and
# unmaps them on free, until a free raises its threshold; whether it has depends on what the
# process did before. So arrays of 128 KB to 1 MB too page-faulted on every call in some
# processes, several times the kernels' own time (docs/performance.md).
MIN_POOLED_BYTES = 128 << 10
MAX_IDLE_BYTES = 1 << 30
MAX_BLOCKS = 32

# (block, its nbytes, the offset of its first 64-byte aligned byte): uint8 arrays, most
# recently used last, with what every allocation reads of them (.ctypes costs a microsecond).
_blocks = []
_lock = threading.Lock()

# References to a pooled block that nobody else holds: its entry in _blocks, the local
# variable and getrefcount's own argument.
_UNUSED_REFS = 3


def _unused(i):
    """Whether nothing outside the pool refers to block i (call with _lock held)."""
    block = _blocks[i][0]
    return sys.getrefcount(block) == _UNUSED_REFS


def empty(shape, dtype):
    """An uninitialised C-contiguous array, from a reused block when it is large."""
    dtype = np.dtype(dtype)
    count = 1
    for n in shape:
        count *= n
    nbytes = count * dtype.itemsize
    if nbytes < MIN_POOLED_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        best = None
        best_size = 2 * nbytes + 64  # best fit, and never more than twice the size asked for
        for i, (_, size, _) in enumerate(_blocks):
            if nbytes + 64 <= size <= best_size and _unused(i):
                best, best_size = i, size
        if best is None:
            block = np.empty(nbytes + 64, np.uint8)
            entry = (block, block.nbytes, -block.ctypes.data % 64)
        else:
            entry = _blocks.pop(best)
        _blocks.append(entry)
        block, _, start = entry
        # Blocks beyond the bounds are dropped when a new one joins, or while the pool
        # holds too many (a scan of every block per call otherwise).
        if best is None or len(_blocks) > MAX_BLOCKS:
            _trim()
    return block[start:start + nbytes].view(dtype).reshape(shape)


def zeros(shape, dtype):
    """empty(shape, dtype) filled with zeros."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def _trim():
    """Drop unused blocks, least recently used first, while the pool holds more than
    MAX_BLOCKS blocks or more than MAX_IDLE_BYTES in unused ones (call with _lock held)."""
    unused = [i for i in range(len(_blocks)) if _unused(i)]
    idle = sum(_blocks[i][1] for i in unused)
    dropped = set()
    for i in unused:
        if len(_blocks) - len(dropped) <= MAX_BLOCKS and idle <= MAX_IDLE_BYTES:
            break
        dropped.add(i)
        idle -= _blocks[i][1]
    _blocks[:] = [_blocks[i] for i in range(len(_blocks)) if i not in dropped]


def release_memory():
    """Let go of every pooled block nobody uses: their memory goes back to the allocator."""
    with _lock:
        _blocks[:] = [_blocks[i] for i in range(len(_blocks)) if not _unused(i)]


def pooled_bytes():
    """(bytes in use, bytes idle) in the pool."""
    with _lock:
        unused = [_unused(i) for i in range(len(_blocks))]
        used = sum(e[1] for e, u in zip(_blocks, unused) if not u)
        return used, sum(e[1] for e, u in zip(_blocks, unused) if u)
