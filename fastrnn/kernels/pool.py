"""fastrnn's native worker threads: a launch of a kernel on them costs microseconds, where
a launch on Python threads (_threads._Worker) costs a thread wake-up and the GIL each way.

Each worker thread runs ``worker_loop`` for the life of the process: a nogil kernel that
never returns to Python, so it never needs the GIL. It waits on the ``mailbox`` for a job,
runs it and says so. ``launch(mailbox, address, workers, args)``, called from Python on the
launching thread, publishes the job: the address of a kernel's C wrapper (address.py)
taking (w, workers, *args), a pointer to ``args`` (a tuple on the launcher's stack, alive
until every worker has finished), and a trampoline, compiled with launch for the type of
``args``, through which a worker that does not know that type calls the kernel. The
launcher then runs share 0 itself and waits for the others' shares.

A waiting worker spins for about IDLE_SPINS pause hints (a sampling loop's next step
comes within that), then sleeps on a pthread condition variable until the next job, so an
idle process does not hold a core. The pthread functions are declared by name, as
sync.yield_core's sched_yield, so these kernels stay cacheable; the mutex and the
condition variable live in memory the Python side initialises (_threads._NativePool).

mailbox: int64 array of mailbox_length(threads) zeros but for the addresses of
the mutex and the condition variable. The kernels a pool runs must not raise: their C
wrapper would report the error and return (as address.py's callees).
"""

import hashlib

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import JIT_OPTIONS
from .sync import SYNC_STRIDE, _wait, fetch_add, load_acquire, pause, store_release

# The mailbox's slots, as offsets: each on a cache line pair of its own (SYNC_STRIDE int64).
GENERATION = 0 * SYNC_STRIDE  # jobs published so far
KERNEL = 1 * SYNC_STRIDE      # the job: the kernel's C wrapper address
TRAMPOLINE = 2 * SYNC_STRIDE  # the trampoline's address
ARGS = 3 * SYNC_STRIDE        # the address of the args tuple
WORKERS = 4 * SYNC_STRIDE     # the job's worker count
SLEEPERS = 5 * SYNC_STRIDE    # workers asleep on the condition variable
STOP = 6 * SYNC_STRIDE        # nonzero: the workers return (and their threads end)
MUTEX = 7 * SYNC_STRIDE       # the address of the pthread mutex
CONDITION = 8 * SYNC_STRIDE   # the address of the pthread condition variable
READY = 9 * SYNC_STRIDE       # workers that have started their loop
DONE = 10 * SYNC_STRIDE       # DONE + w * SYNC_STRIDE: the last generation worker w finished
IDLE_SPINS = 20_000  # pause hints before a waiting worker sleeps (~0.4 ms on Zen 3)


def mailbox_length(threads):
    """The int64 length of a mailbox for a pool of ``threads`` threads (the launcher's
    included)."""
    return DONE + threads * SYNC_STRIDE


def _call_kernel(context, builder, address, w, workers, args_type, args_value):
    """Emit a call of the C wrapper at ``address`` (i64) with (w, workers, *args)."""
    arg_types = [types.int64, types.int64] + list(args_type.types)
    values = [w, workers] + cgutils.unpack_tuple(builder, args_value, len(args_type.types))
    function_type = ir.FunctionType(context.get_value_type(types.none),
                                    [context.get_value_type(t) for t in arg_types])
    builder.call(builder.inttoptr(address, function_type.as_pointer()), values)


def _trampoline(context, module, args_type):
    """void trampoline(i64 kernel, i64 w, i64 workers, i8* args): the kernel called with
    the tuple at ``args``, of type args_type; one per module and type."""
    i64 = ir.IntType(64)
    byte_pointer = ir.IntType(8).as_pointer()
    digest = hashlib.sha1(str(args_type).encode()).hexdigest()[:16]
    name = f"fastrnn_trampoline_{digest}"
    if name in module.globals:
        return module.globals[name]
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64, i64, i64, byte_pointer]),
                           name)
    function.linkage = "linkonce_odr"
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    kernel, w, workers, pointer = function.args
    tuple_type = context.get_value_type(args_type)
    args_value = builder.load(builder.bitcast(pointer, tuple_type.as_pointer()))
    _call_kernel(context, builder, kernel, w, workers, args_type, args_value)
    builder.ret_void()
    return function


@intrinsic
def _publish(typingctx, mailbox, address, workers, args):
    """Store the job (address, a trampoline for args' type, args' address, workers) in
    the mailbox and publish it; returns the job's generation. args is copied to the
    caller's stack frame, where it stays until the caller returns."""
    def codegen(context, builder, signature, llargs):
        mailbox_, address_, workers_, args_ = llargs
        mailbox_type = signature.args[0]
        array = context.make_array(mailbox_type)(context, builder, mailbox_)

        def slot(index):
            return cgutils.get_item_pointer(context, builder, mailbox_type, array,
                                            [context.get_constant(types.intp, index)])
        stored = cgutils.alloca_once_value(builder, args_)
        i64 = ir.IntType(64)
        trampoline = _trampoline(context, builder.module, signature.args[3])
        builder.store(address_, slot(KERNEL))
        builder.store(builder.ptrtoint(trampoline, i64), slot(TRAMPOLINE))
        builder.store(builder.ptrtoint(stored, i64), slot(ARGS))
        builder.store(workers_, slot(WORKERS))
        # seq_cst, so that the load of SLEEPERS after it cannot move before it (see launch).
        previous = builder.atomic_rmw("add", slot(GENERATION), ir.Constant(i64, 1), "seq_cst")
        return builder.add(previous, ir.Constant(i64, 1))
    return types.int64(mailbox, types.int64, types.int64, args), codegen


@intrinsic
def _call_share(typingctx, address, w, workers, args):
    """The kernel at ``address`` called with (w, workers, *args) on this thread."""
    def codegen(context, builder, signature, llargs):
        _call_kernel(context, builder, llargs[0], llargs[1], llargs[2], signature.args[3],
                     llargs[3])
        return context.get_dummy_value()
    return types.void(types.int64, types.int64, types.int64, args), codegen


@intrinsic
def _run_trampoline(typingctx, trampoline, kernel, w, workers, args_address):
    """Call the trampoline at ``trampoline`` (all arguments int64)."""
    def codegen(context, builder, signature, llargs):
        i64 = ir.IntType(64)
        byte_pointer = ir.IntType(8).as_pointer()
        function_type = ir.FunctionType(ir.VoidType(), [i64, i64, i64, byte_pointer])
        builder.call(builder.inttoptr(llargs[0], function_type.as_pointer()),
                     [llargs[1], llargs[2], llargs[3], builder.inttoptr(llargs[4], byte_pointer)])
        return context.get_dummy_value()
    return types.void(types.int64, types.int64, types.int64, types.int64, types.int64), codegen


def _emit_c_call(builder, name, addresses):
    """Call the C library's ``int name(void*, ...)`` with ``addresses`` (i64), declared by
    name, so that the calling kernel stays cacheable."""
    byte_pointer = ir.IntType(8).as_pointer()
    function = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.IntType(32), [byte_pointer] * len(addresses)), name)
    builder.call(function, [builder.inttoptr(a, byte_pointer) for a in addresses])


def _pthread1(name):
    """An intrinsic f(address) calling ``int name(void*)``."""
    @intrinsic
    def call(typingctx, address):
        def codegen(context, builder, signature, llargs):
            _emit_c_call(builder, name, llargs)
            return context.get_dummy_value()
        return types.void(types.int64), codegen
    return call


@intrinsic
def _condition_wait(typingctx, condition, mutex):
    """pthread_cond_wait(condition, mutex), both given as addresses."""
    def codegen(context, builder, signature, llargs):
        _emit_c_call(builder, "pthread_cond_wait", llargs)
        return context.get_dummy_value()
    return types.void(types.int64, types.int64), codegen


_mutex_lock = _pthread1("pthread_mutex_lock")
_mutex_unlock = _pthread1("pthread_mutex_unlock")
_condition_broadcast = _pthread1("pthread_cond_broadcast")


@njit(**JIT_OPTIONS)
def launch(mailbox, address, workers, args):
    """The kernel at ``address`` (a C wrapper, address.py) run as kernel(w, workers, *args)
    for w < workers (at most the pool's threads): share 0 here, the others on the pool's
    worker threads; returns when all are done."""
    generation = _publish(mailbox, address, workers, args)
    if load_acquire(mailbox, SLEEPERS) > 0:
        _mutex_lock(mailbox[MUTEX])
        _condition_broadcast(mailbox[CONDITION])
        _mutex_unlock(mailbox[MUTEX])
    _call_share(address, 0, workers, args)
    # Every worker of the pool, not only the job's: one that sat this job out must have
    # seen it before the next job's fields overwrite it.
    for w in range(1, (mailbox.shape[0] - DONE) // SYNC_STRIDE):
        spins = 0
        while load_acquire(mailbox, DONE + w * SYNC_STRIDE) < generation:
            _wait(spins)
            spins += 1


@njit(**JIT_OPTIONS)
def worker_loop(mailbox, w):
    """Worker w's life (w >= 1): wait for each job, run its share if w < its worker count,
    say it is done; return when STOP is set."""
    seen = load_acquire(mailbox, GENERATION)
    fetch_add(mailbox, READY, 1)
    while True:
        spins = 0
        while load_acquire(mailbox, GENERATION) == seen:
            if spins < IDLE_SPINS:
                pause()
                spins += 1
                continue
            # Asleep until the next job: SLEEPERS counted first (seq_cst), then the
            # generation checked again under the mutex, so a launcher that published
            # without seeing this sleeper is seen here instead.
            _mutex_lock(mailbox[MUTEX])
            fetch_add(mailbox, SLEEPERS, 1)
            while load_acquire(mailbox, GENERATION) == seen:
                _condition_wait(mailbox[CONDITION], mailbox[MUTEX])
            fetch_add(mailbox, SLEEPERS, -1)
            _mutex_unlock(mailbox[MUTEX])
        seen = load_acquire(mailbox, GENERATION)
        if load_acquire(mailbox, STOP) != 0:
            return
        workers = load_acquire(mailbox, WORKERS)
        if w < workers:
            _run_trampoline(load_acquire(mailbox, TRAMPOLINE),
                            load_acquire(mailbox, KERNEL), w, workers,
                            load_acquire(mailbox, ARGS))
        store_release(mailbox, DONE + w * SYNC_STRIDE, seen)
