"""The column-split schedule: one time loop shared by hidden units between workers, for
batches too small to share out by rows (a single sequence, or a few, with big H).

Worker (part) p owns the hidden units j0 = bounds[p] <= j < j1 = bounds[p + 1] and the
matching columns of every gate block. Its weights are packed on their own
(``pack_unit_parts``): the columns g * H + j0 ... g * H + j1 of each gate g side by side,
as one small cell of U = j1 - j0 units, so its products are ordinary panel products and its
slice of Wh (512 KB of float32 at H = 256 on 2 workers) stays in its core's cache for the
whole loop. Each step reads the whole previous h (every part wrote a slice of it) from one
of two buffers and writes its slice of the next into the other, then the parts meet at one
barrier (sync.py).

Each output element gets the same arithmetic as in the row schedule (the same kernel for
its row, the same k-blocks; only which panel its column sits in differs), so results equal
the row schedule's to the bit, for any number of parts.

One driver for every cell: the cell gives a part function ``part(stage, p, t, s, state)``
doing, for part p,
  BEGIN: set up (pack the part's weights, copy its slice of the state in)
  CHUNK: the input projection of the steps t .. t + s (the chunk's length is s)
  STEP:  step t, the s-th of its chunk
  END:   copy the part's slice of the state out
and ``state``, a tuple of the cell's arrays whose types it names (``driver`` makes the
driver's copy for the state's types; the loop calls the part through its address).
"""

import types

import numpy as np
from numba import njit

from .._config import JIT_OPTIONS, setup_kernels
from .._threads import run_workers
from .address import caller, entry_address
from .gemm import (PACK_ROWS, pack_transposed_by_tiles, panel_width, step_product_at,
                   steps_product_at)
from .stream import copy_row, copy_rows
from .sync import CALLED_OFF, UNDECIDED, rendezvous, wait_for_step

BEGIN, CHUNK, STEP, END = 0, 1, 2, 3


@njit(**JIT_OPTIONS)
def pack_unit_part(W, bounds, p, gates, out):
    """Part p's columns of W (K, gates * H), gate blocks side by side (gates * U columns),
    packed as pack_panels would pack them as a matrix, into out[:part_panel_length(...)].
    Straight from W: a segment of a gate block that falls in one panel is a contiguous
    copy for every k."""
    K = W.shape[0]
    H = W.shape[1] // gates
    j0 = bounds[p]
    U = bounds[p + 1] - j0
    NR = panel_width(W)
    width = gates * U
    n_panels = (width + NR - 1) // NR
    for j in range(n_panels):  # the zero padding of the last panel
        if (j + 1) * NR > width:
            for k in range(K):
                out[j * K * NR + k * NR + width - j * NR:(j + 1) * K * NR - (K - k - 1) * NR] = 0
    for k0 in range(0, K, PACK_ROWS):  # not a segment at a time down all K (see PACK_ROWS)
        k1 = min(k0 + PACK_ROWS, K)
        for g in range(gates):
            c = g * U
            while c < (g + 1) * U:
                j = c // NR
                length = min((j + 1) * NR, (g + 1) * U) - c
                source = g * H + j0 + c - g * U
                at = j * K * NR + c - j * NR
                for k in range(k0, k1):
                    copy_row(out[at + k * NR:at + k * NR + length],
                             W[k, source:source + length], False)
                c += length


@njit(inline="always", **JIT_OPTIONS)
def part_panel_length(K, units, gates, like):
    """Length of pack_panels of a (K, gates * units) matrix of like's dtype."""
    NR = panel_width(like)
    return (gates * units + NR - 1) // NR * NR * K


@njit(inline="always", **JIT_OPTIONS)
def part_projection(projection, x, t0, steps, Wx_parts, p, units, gates, proj, active):
    """A forward part's CHUNK: x_t Wx for its columns (Wx_parts[p], pack_unit_part's) and
    the steps t0 .. t0 + steps, into proj[p] (the projection kernel at ``projection``)."""
    panels = Wx_parts[p, :part_panel_length(x.shape[2], units, gates, x)]
    steps_product_at(projection, (x, t0, steps, panels, proj[p], np.int64(0), np.int64(1),
                                  active))


@njit(inline="always", **JIT_OPTIONS)
def part_product(product, A, panels, p, width, rec, M, t):
    """rec[p] = A @ (a part's packed columns, panels[p], ``width`` of them) for the rows
    below M: the per-step product of a forward part (A = h_{t-1}) or a backward one
    (A = da). Odd steps take the panels last to first: the panels the previous step read
    last are still in cache when a part's share is about the cache's size."""
    length = part_panel_length(A.shape[1], width, 1, A)
    step_product_at(product, (A, panels[p, :length], rec[p], np.int64(0), np.int64(1), M,
                              t % 2 == 1))


@njit(inline="always", **JIT_OPTIONS)
def pack_transposed_part(top, bottom, j0, j1, d0, d1, WT_own, WT_parts, p):
    """A backward part's weights: rows j0..j1 of ``top`` (Wh) and d0..d1 of ``bottom``
    (Wx; an empty range for none) side by side as rows in WT_own[p], packed as their
    transpose into WT_parts[p]: the transposing pack reads rows, where a copy of
    Wh[j0:j1].T read columns, gates * H values apart."""
    K = top.shape[1]
    own = WT_own[p][:K * (j1 - j0 + d1 - d0)].reshape((j1 - j0 + d1 - d0, K))
    copy_rows(own, top[j0:j1])
    copy_rows(own[j1 - j0:], bottom[d0:d1])
    pack_transposed_by_tiles(own, WT_parts[p])


@njit(inline="always", **JIT_OPTIONS)
def split_loop(p_lo, p_hi, workers, sync, T, S, state, part):
    """Parts p_lo .. p_hi - 1 of the time loop on this thread: one part when the split
    goes ahead (meeting the others after every step, the last included, so that END sees
    every part's steps), all of them when it was called off (one after the other, no
    waiting). part: the address of the cell's part function (address.entry_address for
    the driver's layout), called through part_at, which ``driver`` binds.

    The part function is called through its address, not linked in: linked, LLVM
    re-optimised its whole body inside split_worker, so every part compiled twice (the
    figures are in docs/performance.md). One loop over the stages with a single call
    site, inlined into split_worker.
    """
    alone = p_hi - p_lo == workers
    # Typed, not literal: part_at takes exactly the part's argument types (int64).
    stage = np.int64(BEGIN)
    t = np.int64(0)  # the step (STEP)
    t0 = np.int64(0)  # the chunk's first step
    steps = np.int64(0)  # the chunk's length
    p = p_lo
    while True:
        part_at(part, (stage, p, t0 if stage == CHUNK else t,
                       t - t0 if stage == STEP else steps, state))
        p += 1
        if p < p_hi:
            continue
        p = p_lo
        if stage == END:
            return
        if stage == CHUNK:
            stage = STEP
            t = t0
            continue
        if stage == STEP:
            if not alone:
                wait_for_step(sync, p_lo, workers, t + 1)
            t += 1
            if t < t0 + steps:
                continue
            t0 = t
        # After BEGIN or a chunk's last step: the next chunk, or END.
        if t0 >= T:
            stage = END
        else:
            steps = min(S, T - t0)
            stage = CHUNK


@njit(**JIT_OPTIONS)
def split_worker(worker, workers, sync, T, S, state, part):
    """What worker ``worker`` of ``workers`` runs of the split time loop, each on its own
    thread (_threads.run_workers; see sync.py for when one of them runs every part after
    all). sync: sync.sync_slots(workers) zeros; part: as split_loop. A template:
    ``driver`` binds split_loop (called once: see split_loop)."""
    role = rendezvous(sync, worker, workers)
    first = worker
    last = worker + 1
    if role == CALLED_OFF:
        first = 0
        last = workers
    if role != UNDECIDED:
        split_loop(first, last, workers, sync, T, S, state, part)


def part_at(address, args):
    """Placeholder for the caller of the cell's part function in the templates above."""
    raise NotImplementedError("bound by split.driver")


def _bind(template, suffix, **names):
    """A copy of the jitted function ``template`` whose global ``names`` are rebound, under
    its own name (so numba caches it in files of its own). numba cannot cache a kernel
    that takes a jitted function as an argument (it recompiles it in every process), so
    the driver is specialised this way instead, once per cell."""
    source = template.py_func
    namespace = dict(source.__globals__, **names)
    function = types.FunctionType(source.__code__, namespace, f"{source.__name__}_{suffix}",
                                  source.__defaults__, source.__closure__)
    function.__qualname__ = function.__name__
    function.__module__ = source.__module__
    function.__doc__ = source.__doc__
    # The template's own options, and caching: numba keeps cache=True out of targetoptions,
    # and without it here the bound drivers were compiled afresh in every process.
    options = {k: v for k, v in template.targetoptions.items() if k != "nopython"}
    return njit(**options, cache=JIT_OPTIONS["cache"])(function)


def driver(cell_part, suffix, state_layout):
    """``run(workers, sync, T, S, state)``: the split time loop for a cell whose part
    function is ``cell_part``, e.g. driver(lstm_split_part, "lstm", ...), split_worker on
    ``workers`` threads; ``run.worker`` is the bound split_worker. state_layout: the
    types of ``state`` as address.array_types spells them (the part is called through
    its address, compiled for exactly those)."""
    layout = f"iiii({state_layout})"
    loop = _bind(split_loop, suffix, part_at=caller(layout))
    worker = _bind(split_worker, suffix, split_loop=loop)

    def run(workers, sync, T, S, state):
        part = entry_address(cell_part, state[0].dtype, layout)
        run_workers(worker, workers, sync, T, S, state, part)

    run.worker = worker
    # For _compiling.Ahead: the argument types of the worker and of the part.
    run.worker_layout = f"iiIii({state_layout})i"
    run.part_layout = layout
    return run


setup_kernels(globals())  # every kernel above: see _config.py
