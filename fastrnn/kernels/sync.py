"""Synchronisation between the workers of a time loop split by columns (hidden units).

A single sequence (or a few) cannot be shared out by rows, so the column-split time loops
give each worker a slice of the hidden units, and the workers meet once per step: step t+1
reads the whole h_t, which every worker wrote a slice of. numba has no barrier, so this is
one made of atomic counters (LLVM atomics through numba intrinsics):

- ``rendezvous`` first: every worker announces itself, and the loop runs split only when
  all of them are running at once, on different threads. A threading layer may run two
  iterations of a prange on one thread (TBB can, and one thread does when numba's count is
  1); a barrier would then wait forever. A worker that waits too long for the others calls
  the split off instead, and then runs every worker's share itself, one after the other
  (the same operations on the same values, so the same bits), while the late workers,
  seeing the call, do nothing.
- then ``wait_for_step`` after each step: a worker publishes that it finished step t and
  waits until every worker has. Each worker has its own counter, so nothing is reset
  between steps, and h is double-buffered (_core.py), so nobody overwrites what a slower
  worker still reads.

Waiting spins a little with the CPU's pause hint, then yields the core to the OS
(sched_yield): on an oversubscribed machine a spinning worker would otherwise take the core
its partner needs.

sync: int64 array of SYNC_STRIDE * (2 + workers) zeros, one per call: slot 0 counts the
arrivals, slot 1 holds the decision, slot 2 + w worker w's finished steps (each slot on a
cache line pair of its own, so that the workers' counters do not share a line).
"""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import JIT_OPTIONS, setup_kernels
from .._isa import MACHINE

SYNC_STRIDE = 16  # int64 per slot: 128 bytes, a pair of cache lines
UNDECIDED, SPLIT, CALLED_OFF = 0, 1, 2
SPIN_PAUSES = 200  # pause hints before yielding the core
RENDEZVOUS_YIELDS = 100_000  # yields before a worker calls the split off (tens of ms)


def _slot_pointer(context, builder, array_type, array, index):
    array = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, array, [index])


@intrinsic
def load_acquire(typingctx, array, index):
    """array[index] (int64), loaded with acquire ordering."""
    def codegen(context, builder, signature, args):
        pointer = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(pointer, "acquire", 8)
    return types.int64(array, index), codegen


@intrinsic
def store_release(typingctx, array, index, value):
    """array[index] = value (int64), stored with release ordering: every write before it
    is visible to a worker that loads the value with acquire ordering."""
    def codegen(context, builder, signature, args):
        pointer = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], pointer, "release", 8)
        return context.get_dummy_value()
    return types.void(array, index, types.int64), codegen


@intrinsic
def fetch_add(typingctx, array, index, value):
    """array[index] += value atomically; returns the value before."""
    def codegen(context, builder, signature, args):
        pointer = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw("add", pointer, args[2], "seq_cst")
    return types.int64(array, index, types.int64), codegen


@intrinsic
def compare_exchange(typingctx, array, index, expected, value):
    """array[index] = value if it holds ``expected``, atomically; returns the value it held."""
    def codegen(context, builder, signature, args):
        pointer = _slot_pointer(context, builder, signature.args[0], args[0], args[1])
        pair = builder.cmpxchg(pointer, args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)
    return types.int64(array, index, types.int64, types.int64), codegen


@intrinsic
def pause(typingctx):
    """The CPU's spin-wait hint (x86 pause, aarch64 yield; nothing elsewhere)."""
    def codegen(context, builder, signature, args):
        module = builder.module
        if MACHINE in ("x86_64", "amd64", "i386", "i686"):
            hint = cgutils.get_or_insert_function(module, ir.FunctionType(ir.VoidType(), []),
                                                  "llvm.x86.sse2.pause")
            builder.call(hint, [])
        elif MACHINE in ("aarch64", "arm64"):
            hint = cgutils.get_or_insert_function(
                module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]), "llvm.aarch64.hint")
            builder.call(hint, [ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def yield_core(typingctx):
    """sched_yield(): let the OS run another thread on this core. Declared by name, so the
    compiled kernel stays cacheable (the loader finds the C library's symbol)."""
    def codegen(context, builder, signature, args):
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(function, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(inline="always", **JIT_OPTIONS)
def _wait(spins):
    """One round of waiting: a pause hint for the first SPIN_PAUSES rounds, then a yield."""
    if spins < SPIN_PAUSES:
        pause()
    else:
        yield_core()


@njit(**JIT_OPTIONS)
def rendezvous(sync, worker, workers):
    """Whether the split goes ahead: SPLIT when all ``workers`` arrived (each then does its
    own share, meeting the others at wait_for_step), CALLED_OFF to the one worker that
    gave up waiting (it does every share alone) and UNDECIDED to the others (nothing to do:
    their shares are done)."""
    arrived = fetch_add(sync, 0, 1) + 1
    if arrived == workers:
        compare_exchange(sync, SYNC_STRIDE, UNDECIDED, SPLIT)
    spins = 0
    while load_acquire(sync, SYNC_STRIDE) == UNDECIDED:
        _wait(spins)
        spins += 1
        if spins > SPIN_PAUSES + RENDEZVOUS_YIELDS:
            if compare_exchange(sync, SYNC_STRIDE, UNDECIDED, CALLED_OFF) == UNDECIDED:
                return CALLED_OFF
    decision = load_acquire(sync, SYNC_STRIDE)
    return SPLIT if decision == SPLIT else UNDECIDED


@njit(**JIT_OPTIONS)
def wait_for_step(sync, worker, workers, steps_done):
    """Publish that ``worker`` has finished ``steps_done`` steps, and wait until every
    worker has: after this, all the writes of those steps are visible to this worker."""
    store_release(sync, (2 + worker) * SYNC_STRIDE, steps_done)
    for other in range(workers):
        spins = 0
        while load_acquire(sync, (2 + other) * SYNC_STRIDE) < steps_done:
            _wait(spins)
            spins += 1


def sync_slots(workers):
    """Size of the ``sync`` array for ``workers`` workers."""
    return SYNC_STRIDE * (2 + workers)


setup_kernels(globals())  # every kernel above: see _config.py
