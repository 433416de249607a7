"""Kernels shared by the cells: the input projection of a chunk and the weight gradients.

Kernels trust their inputs: the API layer has checked shapes and made every array
C-contiguous and of one float dtype.

Layouts. The batch arrives sorted by length, longest first, so the sequences still running
at step t are the prefix ``[0, active[t])``. Per-step values (inputs, gates, what the
training forward keeps for the backward) are stored in "packed rows", time-major like
PyTorch's PackedSequence: step t of sequence n is row ``offsets[t] + n`` of an (R, .)
array, R the sum of the lengths, offsets[t] the number of real steps before t. No memory
or work goes to padding, and the rows one step reads are adjacent: with sequence-major
rows the cell loop missed the caches on every row and two threads ran no faster than one.
Inference chunks of S steps use the same order: row ``(t - t0) * active[t0] + n``.
"""

from numba import njit, prange

from .._config import JIT_OPTIONS, PARALLEL_JIT_OPTIONS
from .gemm import gemm, gemm_panels


@njit(**JIT_OPTIONS)
def project_chunk(x, Wx_panels, t0, M, x_chunk, proj, threads):
    """proj[s * M + n] = x[n, t0 + s] @ Wx for the steps s of the chunk starting at t0 (S,
    or fewer at the end) and the M sequences running at t0, as one GEMM.

    x: (N, T, D); Wx_panels: pack_panels(Wx), packed once for all chunks
    x_chunk: (N * S, D) gather buffer; proj: (N * S, G) out.
    Rows of sequences that end inside the chunk are computed and unused.
    """
    N, T, D = x.shape
    S = min(x_chunk.shape[0] // N, T - t0)
    for s in range(S):
        for n in range(M):
            x_chunk[s * M + n] = x[n, t0 + s]
    gemm_panels(x_chunk[:M * S], Wx_panels, proj[:M * S], threads)


@njit(**JIT_OPTIONS)
def weight_grads_kernel(da_x, da_h, separate_h, x_rows, h_prev, Wx, dx_rows, dWx, dWh,
                        db_x, db_h, threads):
    """dx, dWx, dWh and the bias gradients from the gate gradients of all real steps.

    All per-step arrays are packed rows (R = sum of lengths, see the module docstring):
    da_x: (R, G) gradient of the input-side pre-activations (x_t Wx + b_x)
    da_h: (R, G) gradient of the recurrent-side ones (h_{t-1} Wh + b_h); only read when
        separate_h (the GRU); otherwise da_x serves for both and db_h is not written
    x_rows: (R, D); h_prev: (R, H) h_{t-1} of every step; Wx: (D, G)
    out: dx_rows (R, D); dWx (D, G); dWh (H, G); db_x, db_h (G,)
    threads: numba threads to use at most

    fastrnn's own GEMM, not BLAS: no second thread pool spinning next to numba's (on 2
    cores, OpenBLAS's pool next to another slowed the next kernel 2-3x), and the same
    bits whatever the thread count.
    """
    dah = da_h if separate_h else da_x
    gemm(da_x, Wx.T, dx_rows, False, threads)
    gemm(x_rows.T, da_x, dWx, False, threads)
    gemm(h_prev.T, dah, dWh, False, threads)
    column_sums(da_x, db_x, threads)
    if separate_h:
        column_sums(da_h, db_h, threads)


@njit(**JIT_OPTIONS)
def column_sums_part(a, out, lo, hi):
    """out[lo:hi] = a[:, lo:hi].sum(axis=0), adding the rows in order."""
    total = a[0, lo:hi].copy()
    for r in range(1, a.shape[0]):
        row = a[r, lo:hi]  # sliced: indexing row[lo + g] kept the loop scalar (6x slower)
        for g in range(hi - lo):
            total[g] += row[g]
    out[lo:hi] = total


@njit(**PARALLEL_JIT_OPTIONS)
def column_sums(a, out, threads):
    """out[:] = a.sum(axis=0) for a: (R >= 1, G), the columns shared out over the threads.
    Each column adds its rows in order, so the sums are the same bits for any thread count."""
    G = a.shape[1]
    workers = max(1, min(threads, G // 64))
    if workers == 1:
        column_sums_part(a, out, 0, G)
        return
    for w in prange(workers):
        column_sums_part(a, out, w * G // workers, (w + 1) * G // workers)
