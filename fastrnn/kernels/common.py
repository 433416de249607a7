"""Kernels shared by the cells: the bias gradients.

Kernels trust their inputs: the API layer has checked shapes and made every array
C-contiguous and of one float dtype.

Layouts. The batch arrives sorted by length, longest first, so the sequences still running
at step t are the prefix ``[0, active[t])``. Per-step values (inputs, gates, what the
training forward keeps for the backward) are stored in "packed rows", time-major like
PyTorch's PackedSequence: step t of sequence n is row ``offsets[t] + n`` of an (R, .)
array, R the sum of the lengths, offsets[t] the number of real steps before t. No memory
or work goes to padding, and the rows one step reads are adjacent: with sequence-major
rows the cell loop missed the caches on every row and two threads ran no faster than one.
"""

from numba import njit, prange

from .._config import JIT_OPTIONS, PARALLEL_JIT_OPTIONS


@njit(**JIT_OPTIONS)
def column_sums_part(a, out, lo, hi):
    """out[lo:hi] = a[:, lo:hi].sum(axis=0), adding the rows in order. a: (R >= 1, G)."""
    total = a[0, lo:hi].copy()
    for r in range(1, a.shape[0]):
        row = a[r, lo:hi]  # sliced: indexing row[lo + g] kept the loop scalar (6x slower)
        for g in range(hi - lo):
            total[g] += row[g]
    out[lo:hi] = total


@njit(**PARALLEL_JIT_OPTIONS)
def column_sums_parallel(a, out, workers):
    """column_sums_part with the columns shared out over ``workers`` threads; each column
    still adds its rows in order, so the sums are the same bits for any worker count.
    A private accumulator per share: summing into out directly, two threads bounced the
    cache line their shares meet on, every row."""
    G = a.shape[1]
    for w in prange(workers):
        column_sums_part(a, out, w * G // workers, (w + 1) * G // workers)
