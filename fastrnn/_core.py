"""Pieces the LSTM, RNN and GRU API modules share: batch ordering for ragged batches,
upstream-gradient buffers and the weight gradients."""

import functools

import numpy as np

from . import _isa, _memory
from . import _validate as v
from ._isa import MR, MR_STEP
from ._threads import _parallel_launch, get_num_threads, run_workers
from .kernels.address import entry_address
from .kernels.gemm import (IN_PLACE_ARGS, STEP_PRODUCT_ARGS, STEPS_PRODUCT_ARGS,
                           columns_per_panel, gemm_share, gemm_worker_count, in_place_kernel,
                           pack_panels, pack_transposed_by_tiles, padded_columns, padded_rows,
                           share_scratch_length, step_product_kernel,
                           steps_product_kernel, worker_count)


@functools.lru_cache(maxsize=32)
def _full_batch(N, T):
    """lengths, active and offsets of a batch without ragged lengths, made once per shape
    (otherwise every call would pay to build them). Shared between calls: no kernel writes
    them, and CellCache.lengths hands out a copy."""
    return (np.full(N, T, np.int64), np.full(T, N, np.int64), np.arange(T, dtype=np.int64) * N)


def batch_order(lengths, N, T):
    """BatchOrder(lengths, N, T); without lengths one shared instance per (N, T), made once
    (nothing writes to a BatchOrder after it is made, and this runs on every call)."""
    return _full_order(N, T) if lengths is None else BatchOrder(lengths, N, T)


@functools.lru_cache(maxsize=32)
def _full_order(N, T):
    return BatchOrder(None, N, T)


class BatchOrder:
    """How the kernels see a batch: sorted by length, longest first, so that the sequences
    still running at any step are a prefix of the batch (contiguous per-step products, and
    work proportional to the real steps). Without lengths, or already sorted, nothing moves.

    lengths: (N,) sorted lengths; active: (T,) sequences running at each step;
    ragged: some sequence is shorter than T; real_steps: R, the sum of the lengths;
    offsets: (T,) first packed row of each step (see kernels/__init__.py).
    """

    def __init__(self, lengths, N, T):
        """lengths: the caller's ``lengths=`` argument (checked here) or None."""
        self.shape = (N, T)
        lengths = v.validate_lengths(lengths, N, T)
        if lengths is None:
            # The common case, kept to a few microseconds: it is paid on every call.
            self.order = None
            self.lengths, self.active, self.offsets = _full_batch(N, T)
            self.ragged = False
            self.real_steps = N * T
            return
        order = np.argsort(-lengths, kind="stable")
        self.order = None if np.array_equal(order, np.arange(N)) else order
        self.lengths = np.ascontiguousarray(lengths[order], dtype=np.int64)
        # Number of lengths > t, for every t.
        self.active = (N - np.searchsorted(self.lengths[::-1], np.arange(T), side="right")
                       ).astype(np.int64)
        self.ragged = bool(N) and int(self.lengths[-1]) < T
        self.real_steps = int(self.lengths.sum())
        self.offsets = (np.cumsum(self.active) - self.active).astype(np.int64)

    def _running(self):
        """(T, N) mask: sequence n runs at step t."""
        N, T = self.shape
        return np.arange(N)[None, :] < self.active[:, None]

    def unpack(self, rows):
        """(R, F) packed rows -> (N, T, F) C-contiguous in kernel order, zeros past each
        length."""
        N, T = self.shape
        if not self.ragged:
            if N == 1:
                return rows.reshape(N, T, rows.shape[1])
            out = _memory.empty((N, T, rows.shape[1]), rows.dtype)
            out[...] = rows.reshape(T, N, rows.shape[1]).transpose(1, 0, 2)
            return out
        out = _memory.zeros((N, T, rows.shape[1]), rows.dtype)
        out.transpose(1, 0, 2)[self._running()] = rows
        return out

    def rows(self, dtype, *widths):
        """Uninitialised (R, width) arrays for per-step values, one per width, all views of
        one block from fastrnn's memory pool (see _memory.py: freshly mapped memory
        page-faults on first touch, which can cost several times the kernel's own work),
        and one block rather than several so that it is reused whole."""
        R = self.real_steps
        # Each array starts a multiple of 64 bytes into the block (the pool aligns blocks
        # of MIN_POOLED_BYTES and more to 64 bytes): whole cache lines for the vector loads.
        sizes = [-(-R * w // 16) * 16 for w in widths]
        block = _memory.empty((sum(sizes),), dtype)
        arrays = []
        start = 0
        for width, size in zip(widths, sizes):
            arrays.append(block[start:start + R * width].reshape(R, width))
            start += size
        return arrays[0] if len(arrays) == 1 else arrays

    def start(self, x, h0):
        """What every forward begins with: x (N, T, D) and h0 (N, H) in kernel order, the
        running state h and the (N, T, H) output. h is a copy of h0 the kernel updates,
        with rows up to a multiple of the kernels' row tile (see kernels/gemm.py); the
        ``final`` method takes the real rows back."""
        x, h0 = self.sort(x), self.sort(h0)
        h = np.zeros((padded_rows(h0.shape[0]), h0.shape[1]), h0.dtype)
        h[:h0.shape[0]] = h0
        return x, h0, h, self.padded(h0.shape[1], x.dtype)

    def final(self, state):
        """The first N rows of a running state (N+, H), in the caller's order."""
        return self.unsort(state[:self.shape[0]])

    def padded(self, width, dtype):
        """An (N, T, width) output the kernels fill at real steps: zeros when ragged, so the
        padding reads 0, uninitialised otherwise (every entry gets written)."""
        return (_memory.zeros if self.ragged else _memory.empty)(self.shape + (width,), dtype)


    def sort(self, a):
        """a with its batch axis (axis 0) in kernel order; a itself when nothing moves."""
        return a if self.order is None else np.ascontiguousarray(a[self.order])

    def unsort(self, a):
        """a (batch axis 0) back in the caller's order; a itself when nothing moves."""
        if self.order is None:
            return a
        out = np.empty_like(a)
        out[self.order] = a
        return out


def check_backward_cache(cache, cache_type, cell, step):
    """The cache comes from ``cell``'s forward of the right kind (sequence or single step),
    or TypeError saying which backward it belongs to. Returns (N, T, H, dtype) of the forward."""
    v.check_cache(cache, cache_type, f"{cell}_step_forward" if step else f"{cell}_forward")
    if cache.is_step != step:
        made = f"{cell}_step_forward" if cache.is_step else f"{cell}_forward"
        raise TypeError(f"cache comes from {made}; pass it to "
                        f"{made.replace('forward', 'backward')}")
    N, T = cache.order.shape
    return N, T, cache.h0.shape[1], cache.h0.dtype


# The cache rows of a training time loop when nothing is kept (inference): none. Given
# such rows, the loops skip them (kernels/lstm.lstm_train_steps): one loop per cell to
# compile for training and inference.
_NO_ROWS = {np.dtype(t).char: np.empty((0, 0), t) for t in (np.float32, np.float64)}


def no_rows(dtype):
    """An empty (0, 0) array of ``dtype`` for each cache-row argument of a time loop run
    for inference."""
    return _NO_ROWS[np.dtype(dtype).char]


def step_scratch(N, width, dtype):
    """Scratch for the per-step products' output: (N, width) padded to whole row tiles and
    column panels, as kernels/gemm.step_product writes them."""
    return _memory.empty((padded_rows(N), padded_columns(width, dtype)), dtype)


def chunk_scratch(S, N, width, dtype):
    """Scratch for S steps of the per-step products (the time loops' input projection):
    (S, N, width) padded as step_scratch, from the memory pool (up to a few MB)."""
    return _memory.empty((S, padded_rows(N), padded_columns(width, dtype)), dtype)


def chunk_steps(order, D, width, dtype, threads):
    """S: the steps whose input projection the time loops compute at once (see
    kernels/gemm.steps_product). At least MR (each sequence's steps go MR at a time through
    the micro-kernel), and more while a worker would stream Wx (D x width) through the
    caches more than CHUNK_BYTES_PER_ROW per step and row it projects: float32
    (100, 64, 256, 256) takes 6, (200, 32, 512, 512) 6, float64 (200, 32, 512, 512) 12.
    A multiple of MR, or all T steps, so that S does not change a single bit of the results
    (see steps_product) and may depend on the thread count."""
    return _chunk_steps(*order.shape, D, width, dtype, threads)


@functools.lru_cache(maxsize=256)
def _chunk_steps(N, T, D, width, dtype, threads):
    """chunk_steps for an (N, T) batch, cached: it is paid on every call, and computing it
    each time is a visible share of a small forward such as (50, 1, 32, 32)."""
    rows = -(-N // worker_count(N, threads))
    weight_bytes = D * width * np.dtype(dtype).itemsize
    S = weight_bytes // (rows * _isa.CHUNK_BYTES_PER_ROW) // MR * MR
    return int(min(max(MR, min(S, _isa.MAX_CHUNK_STEPS)), T))


def step_operand(N, width, dtype):
    """An (N, width) per-step operand of the products, rows padded to whole row tiles
    (zeros, so the padding rows compute harmless zeros)."""
    return _memory.zeros((padded_rows(N), width), dtype)


def weight_panels(W, transpose=False):
    """A weight matrix W (or W.T) packed in the micro-kernel's column panels
    (kernels/gemm.pack_panels), the operand of the time loops' per-step products."""
    K, P = W.shape[::-1] if transpose else W.shape
    panels = _memory.empty((K * padded_columns(P, W.dtype),), W.dtype)
    if transpose:
        pack_transposed_by_tiles(W, panels)
    else:
        pack_panels(W, False, panels)
    return panels


def state_grad(name, grad, N, H, dtype, order):
    """A fresh (N, H) buffer in kernel order holding ``grad`` (zeros when None)."""
    if grad is None:
        return np.zeros((N, H), dtype)
    grad = v.validate_upstream(name, grad, (N, H), "(N, H)", dtype)
    return np.array(order.sort(grad))  # always a copy: the kernel writes into it


# Empty stand-ins for matmul's unused operand, per dtype (never written).
_NOTHING = {np.dtype(t).char: (np.empty(0, t), np.empty((0, 0), t))
            for t in (np.float32, np.float64)}


def matmul(A, B, C, threads, accumulate=False, B_panels=None):
    """C (+)= A @ B with fastrnn's GEMM (kernels/gemm.py) on up to ``threads`` threads.
    A: (M, K), B: (K, P), any strides; C: (M, P) C-contiguous. B_panels: pack_panels(B),
    packed once by a caller that multiplies by B many times; B itself is then not read.

    Called from Python, not from the kernels: numba re-optimises every function a kernel
    calls inside that kernel, so the GEMM linked into each time loop made the first
    (compiling) call take tens of seconds.
    """
    products([(A, B, C, accumulate, B_panels)], threads)


def products(jobs, threads):
    """Several independent matmuls, (A, B, C, accumulate, B_panels) each, in one launch of
    the worker threads (each launch costs tens of microseconds): worker w computes its
    share of every product split over more than w workers, each product split as matmul
    alone would split it (so the same bits).

    The kernel takes C-contiguous operands only (one compiled version): an A given as the
    transpose of a C-contiguous array (x_rows.T) is passed as that array; other strides
    are copied.
    """
    shares = []
    for A, B, C, accumulate, B_panels in jobs:
        M, K = A.shape
        P = C.shape[1]
        if M == 0 or P == 0:
            continue
        if K == 0:
            if not accumulate:
                C[...] = 0
            continue
        a_transposed = not A.flags.c_contiguous and A.T.flags.c_contiguous
        A = A.T if a_transposed else np.ascontiguousarray(A)
        if B_panels is None and _packs_b(M, K, P):
            # Packed here once, for every worker: on AVX-512, gemm_part's own packing of B,
            # k-block by k-block inside each worker's share, made the weight gradients'
            # product much slower than with its panels given (docs/performance.md).
            B_panels = weight_panels(np.ascontiguousarray(B))
        if B_panels is None:
            B_panels = _NOTHING[C.dtype.char][0]
            B = np.ascontiguousarray(B)
        else:
            B = _NOTHING[C.dtype.char][1]
        shares.append((gemm_worker_count(M, P, threads, C.dtype),
                       (A, a_transposed, B, B_panels, C, accumulate)))
    workers = max((w for w, _ in shares), default=1)
    scratch = _worker_scratch(shares, workers)
    if workers == 1:
        for _, args in shares:
            gemm_share(0, 1, *args, scratch[0])
    else:
        run_workers(_product_shares, workers, shares, scratch)


def _packs_b(M, K, P):
    """Whether products() packs B (K, P) for an (M, P) result before the launch: where the
    target's PACK_B_BEFORE_LAUNCH says so and gemm_part would otherwise pack it itself
    rather than read it in place (its direct_B: B small, or meeting at most two row tiles)."""
    return _isa.PACK_B_BEFORE_LAUNCH and K * P >= 1 << 16 and -(-M // MR) > 2


def _worker_scratch(shares, workers):
    """Each worker's packing scratch for gemm_part, sized for the largest of its shares,
    from the memory pool: allocated inside the kernel, the packed operands were fresh pages
    on every call wherever malloc maps its blocks fresh (_memory.py)."""
    if not shares:
        return []
    dtype = shares[0][1][4].dtype  # C's: every product of a call has one dtype
    scratch = []
    for w in range(workers):
        length = 0
        for product_workers, (A, a_transposed, _, _, C, _) in shares:
            if w < product_workers:
                length = max(length, share_scratch_length(w, product_workers, A,
                                                          a_transposed, C))
        scratch.append(_memory.empty((length,), dtype))
    return scratch


def _product_shares(w, workers, shares, scratch):
    for product_workers, args in shares:
        if w < product_workers:
            gemm_share(w, product_workers, *args, scratch[w])


def run_steps(steps, threads, rows, *args):
    """A cell's time loop: steps(worker, workers, *args) for every worker, on fastrnn's
    worker threads (_threads.run_workers), or called directly for one worker (no launch
    for a single sequence tile). rows: sequences running at the start."""
    workers = worker_count(rows, threads)
    if workers == 1:
        steps(0, 1, *args)
    else:
        run_workers(steps, workers, *args)


def splits_by_units(N, D, H, gates):
    """Whether a single step of N sequences is one whose hidden units step_split shares out
    (threads permitting): its rows make one tile (nothing to share out by rows) and it has
    at least STEP_SPLIT_MIN_FLOPS."""
    return N <= MR_STEP and 2 * N * (D + H) * gates * H >= _isa.STEP_SPLIT_MIN_FLOPS


class step_split:
    """``with step_split(N, D, H, gates, dtype) as unit_bounds:`` how a single step of N
    sequences shares its hidden units out between numba's threads: (workers + 1,) bounds,
    worker w taking units unit_bounds[w]..unit_bounds[w + 1] (each at least a panel wide,
    see kernels/lstm.lstm_step_products), or None to run the step as one worker. Split when
    the rows make one tile (nothing to share out by rows) and the step has at least
    STEP_SPLIT_MIN_FLOPS; never while another Python thread's parallel kernels run (the
    lock kernel_threads takes)."""

    __slots__ = ("bounds", "locked")

    def __init__(self, N, D, H, gates, dtype):
        self.bounds = None
        self.locked = False
        if splits_by_units(N, D, H, gates):
            workers = min(get_num_threads(), H // columns_per_panel(dtype))
            if workers > 1 and _parallel_launch.acquire(blocking=False):
                self.bounds, self.locked = _unit_bounds(H, workers), True

    def __enter__(self):
        return self.bounds

    def __exit__(self, *exc_info):
        if self.locked:
            _parallel_launch.release()


def loop_split(N, D, H, gates, threads):
    """How a time loop over N sequences shares its hidden units out between ``threads``
    threads (kernels/split.py): (parts + 1,) unit bounds as step_split gives them, or None
    to share out by rows (kernels/lstm.lstm_train_steps). Split when the rows leave threads
    idle (fewer row tiles than threads) and a step has at least LOOP_SPLIT_MIN_FLOPS (the
    LSTM's, 4 gate blocks) or LIGHT_LOOP_SPLIT_MIN_FLOPS (the GRU's and RNN's); each part
    keeps at least MIN_SPLIT_UNITS units. ``threads`` comes from kernel_threads, which
    holds the parallel-launch lock when it is above 1."""
    if threads == 1 or worker_count(N, threads) == threads:
        return None
    least = _isa.LOOP_SPLIT_MIN_FLOPS if gates == 4 else _isa.LIGHT_LOOP_SPLIT_MIN_FLOPS
    if 2 * N * (D + H) * gates * H < least:
        return None
    parts = min(threads, H // MIN_SPLIT_UNITS)
    return _unit_bounds(H, parts) if parts > 1 else None


def compiled_loop_split(N, D, H, gates, threads, dtype, split_ahead, row_ahead):
    """(bounds, ahead): loop_split's unit bounds, or None for the row schedule, which stands
    in (the same bits) while a helper may still compile the split loop's kernels
    (``split_ahead``, an _compiling.Ahead of them, not ready); ahead: what the row schedule
    asks a helper for, its own kernels (``row_ahead``), then, standing in, the split's. On
    a cold cache they cost a first call ~2 s more on 2 cores (docs/performance.md)."""
    bounds = loop_split(N, D, H, gates, threads)
    if bounds is None or split_ahead.ready(dtype):
        return bounds, row_ahead
    return None, row_ahead.then(split_ahead)


MIN_SPLIT_UNITS = 16  # hidden units per part, at least, in a split time loop


def part_panels(bounds, K, gates, dtype):
    """Scratch for the packed weight columns of each part of a split time loop: (parts,
    K * (gates * U rounded up to a panel)), U the widest part's units; pooled."""
    U = int(np.max(np.diff(bounds)))
    return _memory.empty((bounds.shape[0] - 1, K * padded_columns(gates * U, dtype)), dtype)


def split_scratch(bounds, gates, N, D, H, S, dtype):
    """The per-part arrays of a split time loop (kernels/split.py), each indexed by part
    first and sized for the widest part (U units): Wx_parts, Wh_parts (the part's packed
    weight columns), b_parts (gates * U), c_parts (N, U), proj (S, rows, gates * U
    rounded up to a panel), rec (rows, likewise), tanh_c (N, U); rows = padded_rows(N).
    The big ones from the memory pool: fresh pages on every call cost more than packing."""
    parts = bounds.shape[0] - 1
    U = int(np.max(np.diff(bounds)))
    width = padded_columns(gates * U, dtype)
    rows = padded_rows(N)
    return (part_panels(bounds, D, gates, dtype), part_panels(bounds, H, gates, dtype),
            np.empty((parts, gates * U), dtype), np.empty((parts, N, U), dtype),
            _memory.empty((parts, S, rows, width), dtype), np.empty((parts, rows, width), dtype),
            np.empty((parts, N, U), dtype))


def backward_split_scratch(order, bounds, dx_columns, width, dtype):
    """The arrays of a backward time loop split by hidden units (kernels/lstm.
    lstm_backward_part and the GRU's and RNN's): dx (N, T, dx_columns), which the loop
    fills at real steps where it makes dx (dx_columns = D) and nothing else reads when
    dx_columns = 0; dx_bounds, dx's columns split as the units; WT_parts and WT_own, each
    part's columns of [Wh.T | Wx.T] packed and as rows; da_steps (2, rows, width) and rec,
    the per-step product's operand and result. width: the gate columns, gates * H."""
    parts = bounds.shape[0] - 1
    dx = order.padded(dx_columns, dtype)
    dx_bounds = unit_bounds(dx_columns, parts)
    widths = bounds + dx_bounds  # each part's columns of [Wh.T | Wx.T]: diff(widths)
    widest = int(np.max(np.diff(widths)))
    rows = padded_rows(order.shape[0])
    return (dx, dx_bounds, part_panels(widths, width, 1, dtype),
            _memory.empty((parts, width * widest), dtype), np.zeros((2, rows, width), dtype),
            np.empty((parts, rows, padded_columns(widest, dtype)), dtype))


def unit_bounds(H, parts):
    """H units (or columns) in ``parts`` contiguous slices as equal as can be: (parts + 1,)
    bounds (shared between calls: treat as read-only)."""
    return _unit_bounds(H, parts)


@functools.lru_cache(maxsize=64)
def _unit_bounds(H, workers):
    """H hidden units in ``workers`` contiguous slices as equal as can be (shared between
    calls: no kernel writes it)."""
    return np.array([w * H // workers for w in range(workers + 1)], np.int64)


def projection_address(dtype):
    """The address of gemm.steps_product_kernel for ``dtype``, which the time loops call
    for their input projection (kernels/address.py)."""
    return entry_address(steps_product_kernel, dtype, STEPS_PRODUCT_ARGS)


def product_address(dtype):
    """The address of gemm.step_product_kernel for ``dtype``, which the time loops call
    for every step's product with the recurrent weights (kernels/address.py)."""
    return entry_address(step_product_kernel, dtype, STEP_PRODUCT_ARGS)


def in_place_address(dtype):
    """The address of gemm.in_place_kernel for ``dtype``, which the single steps call for
    their products reading the weights where they lie (kernels/address.py)."""
    return entry_address(in_place_kernel, dtype, IN_PLACE_ARGS)


@functools.lru_cache(maxsize=256)
def small_step(N, D, H, gates, splittable):
    """Whether a single step of N sequences runs as one call of its cell's *_step_small
    kernel: single_worker_step, and, for a cell whose big steps share their hidden units
    out (``splittable``: the LSTM, see step_split), too small to split. Kept per shape: a
    sampling loop asks once per token."""
    if splittable and splits_by_units(N, D, H, gates):
        return False
    return single_worker_step(N, D, H, gates)


# The most sequences a short inference runs as single steps (in_steps): one thread reading
# the weights in place once per row tile, against the sequence kernels' packing and two
# threads. T = 1 on Zen 3 (AVX2), float32, step kernel / sequence kernels: 8 rows
# 0.62-0.82x the time at H = 128-512, 16 rows 0.57-0.90x, 32 rows 0.81-1.07x, 64 rows
# 1.07-1.53x.
IN_STEPS_ROWS = 4 * MR_STEP


def in_steps(order, N, T):
    """Whether a cache-free forward (inference) runs as T single steps on the step kernels,
    which read the weights where they lie, rather than on the sequence kernels, which pack
    them into panels first: for at most IN_STEPS_ROWS sequences, no ragged lengths, and
    fewer than MR steps. Packing costs two passes over the weights, as much as two steps
    (on Zen 3, (1, 1, 512, 512) took 2-3 ms against 0.23 for the step); and below MR steps
    every step's input projection goes through the one-row kernel in the sequence kernels
    too (gemm.steps_product), so the two give the same bits (the products in place give
    step_product's, see gemm.step_product_in_place)."""
    return N <= IN_STEPS_ROWS and T < MR and not order.ragged and order.real_steps > 0


def infer_in_steps(x, state, step):
    """A cache-free forward that in_steps takes, as its T steps one by one: x (N, T, D);
    state: the cell's initial states, a tuple whose first is h0 (N, H); step(x_t, state)
    -> the next state tuple, x_t (N, D) C-contiguous (a cell's single-step kernel, which
    reads the weights where they lie). Returns h (N, T, H) and the final state tuple."""
    N, T, _ = x.shape
    h_out = np.empty((N, T, state[0].shape[1]), x.dtype)
    for t in range(T):
        state = step(np.ascontiguousarray(x[:, t]), state)
        h_out[:, t] = state[0]
    return h_out, state


def single_worker_step(N, D, H, gates):
    """Whether a single step of N sequences runs on the calling thread with its products
    reading the weights in place (kernels/gemm.step_product_in_place): when the rows make
    one tile or the step is too small to share out."""
    return N <= MR_STEP or 2 * N * (D + H) * gates * H < _isa.PARALLEL_MIN_FLOPS


def streamed(order, dtype, width):
    """Whether a training forward writing ``width`` values per real step (its cache rows and
    h) writes them with non-temporal stores (kernels/stream.py): from STREAM_MIN_BYTES."""
    return order.real_steps * width * np.dtype(dtype).itemsize >= _isa.STREAM_MIN_BYTES


def dx_in_time_loop(D, H, dtype):
    """Whether the LSTM's and RNN's backward get dx_t from the time loop's per-step product
    (as extra columns beside dh_{t-1}, see kernels/lstm.lstm_backward_steps) rather than
    from one GEMM after the loop: when the D columns fit in the zero padding of the last
    panel of H columns, where they cost nothing. Wherever they would take panels of their
    own, the GEMM wins, as it uses each piece of Wx for 6 rows where a single sequence's
    steps use it once. So at (50, 1, 32, 32) float64 forward+backward was faster with the
    GEMM, while float32, whose 64-column panels held H = 32 and 32 zeros, was faster with
    dx in the loop."""
    return padded_columns(H, dtype) - H >= D


def backward_dx(order, Wh, Wx):
    """What the LSTM's and RNN's backward loop needs for dx: (dx, panels), the operand of its
    per-step product packed as weight_panels does. Where dx_in_time_loop, dx is the
    (N, T, D) output the loop fills at real steps (zeros elsewhere when ragged) and panels
    packs [Wh.T | Wx.T] (G, H + D); otherwise dx is (N, T, 0), so the loop writes none of
    it, panels packs Wh.T (G, H) alone, and backward_products makes dx with one GEMM."""
    in_loop = dx_in_time_loop(Wx.shape[0], Wh.shape[0], Wh.dtype)
    return (order.padded(Wx.shape[0] if in_loop else 0, Wh.dtype),
            backward_panels(Wh, Wx, in_loop))


def backward_panels(Wh, Wx, in_loop):
    """backward_dx's panels alone: [Wh.T | Wx.T] packed when ``in_loop`` (dx_in_time_loop),
    else Wh.T."""
    return weight_panels(np.concatenate((Wh, Wx)) if in_loop else Wh, True)


def weight_grad_rows(order, x_rows, G, H):
    """The LSTM's and RNN's backward working rows: da (R, G), which their time loop fills,
    and rows = [h_prev | x_rows | 1] (R, H + D + 1), whose first H columns (h_{t-1} of each
    packed row) the loop fills. With the three side by side, dWh, dWx and db come out of
    one product rows.T @ da (backward_products): da, the big operand, is packed once,
    where three products packed it three times."""
    D = x_rows.shape[1]
    da, rows = order.rows(x_rows.dtype, G, H + D + 1)
    rows[:, H:H + D] = x_rows
    rows[:, H + D] = 1
    return da, rows


def backward_products(dx, da, rows, H, Wx, order, threads, transposed=False):
    """The LSTM's and RNN's products after the backward loop, in one launch of the threads:
    dWx (D, G), dWh (H, G) and db (G,) as views of the one product rows.T @ da
    (H + D + 1, G) (weight_grad_rows' filled arrays: dWh its first H rows, dWx the next D,
    db the last, summed as a product with the column of ones: the same GEMM, summed in
    blocks, so float32 rounding error grows less than with one running sum); and dx,
    backward_dx's as the loop filled it or, where it has no columns, da @ Wx.T
    (input_grad). Returns dx, dWx, dWh, db; ``transposed``: dWx.T (G, D) and dWh.T (G, H)
    instead, views of the product da.T @ rows (G, H + D + 1), whose rows are contiguous
    (the layout torch keeps its weights in: fastrnn.torch then copies no transposes)."""
    R, width = rows.shape
    G = da.shape[1]
    new = _memory.empty if R else _memory.zeros
    grads = new((G, width) if transposed else (width, G), da.dtype)
    jobs = [((da.T, rows, grads, False, None) if transposed
             else (rows.T, da, grads, False, None))] if R else []
    dx_rows = None
    if not dx.shape[2]:
        dx_jobs, dx_rows = input_grad(da, Wx, order)
        jobs += dx_jobs
    products(jobs, threads)
    if dx_rows is not None:
        dx = order.unpack(dx_rows)
    if transposed:
        return dx, grads[:, H:width - 1], grads[:, :H], grads[:, width - 1]
    return dx, grads[H:width - 1], grads[:H], grads[width - 1]


def weight_grads(da_x, da_h, x_rows, h_prev, order):
    """The GRU's dWx, dWh, db_x, db_h from the gradients of its input-side (x_t Wx + b_x)
    and recurrent-side (h_{t-1} Wh + b_h) pre-activations, da_x and da_h (R, G), which
    differ (so backward_products' one product does not apply). x_rows: (R, D); h_prev:
    (R, H) packed rows. Returns (jobs, (dWx, dWh, db_x, db_h)): four products for
    ``products`` and the arrays they fill."""
    G = da_x.shape[1]
    dtype = da_x.dtype
    new = _memory.empty if order.real_steps else _memory.zeros  # the products fill them
    dWx = new((x_rows.shape[1], G), dtype)
    dWh = new((h_prev.shape[1], G), dtype)
    db_x = np.zeros(G, dtype)
    db_h = np.zeros(G, dtype)
    jobs = []
    if order.real_steps:
        # The bias gradients as products with a row of ones (see backward_products): a
        # column-sum kernel of their own added seconds of compile time.
        ones = np.ones((1, order.real_steps), dtype)
        jobs = [(x_rows.T, da_x, dWx, False, None), (h_prev.T, da_h, dWh, False, None),
                (ones, da_x, db_x[None, :], False, None),
                (ones, da_h, db_h[None, :], False, None)]
    return jobs, (dWx, dWh, db_x, db_h)


def input_grad(da_x, Wx, order):
    """dx = da_x @ Wx.T as one product (the GRU's dx, and the LSTM's and RNN's where the
    loop's product does not make it, see dx_in_time_loop). da_x: (R, G); Wx: (D, G).
    Returns (jobs, dx_rows): the product for ``products`` and the (R, D) rows it fills,
    which order.unpack makes (N, T, D) in kernel order, zero past each length."""
    dx_rows = order.rows(da_x.dtype, Wx.shape[0])
    if not order.real_steps:
        return [], dx_rows
    # Wx.T packed straight from Wx's rows (pack_panels): NumPy's copy of Wx.T took 4x as
    # long, reading columns 4H values apart.
    return [(da_x, None, dx_rows, False, weight_panels(Wx, True))], dx_rows


class CellCache:
    """Base of the caches the forward functions return: treat as read-only.

    Subclasses list their fields in ``__slots__``; every one must be given by keyword.
    ``lengths`` (N,) are the lengths the forward ran with (all T without ``lengths=``).
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs):
        """Give each subclass an __init__ taking its fields as keyword-only arguments and
        assigning them one by one, written out: a cache is made on every forward call, and
        a generic loop of setattr over a keyword dict cost a few microseconds of a small
        one (a single step, (50, 1, 32, 32))."""
        super().__init_subclass__(**kwargs)
        fields = cls.__slots__
        source = (f"def __init__(self, *, {', '.join(fields)}):\n"
                  + "".join(f"    self.{name} = {name}\n" for name in fields))
        namespace = {}
        exec(source, namespace)  # the names are the class's own __slots__ identifiers
        cls.__init__ = namespace["__init__"]

    @property
    def lengths(self):
        return self.order.unsort(self.order.lengths).copy()
