"""How many threads fastrnn's kernels use, the threads themselves, and a guard against
concurrent parallel launches.

fastrnn's kernels split their work over worker threads of its own (its GEMM and time loops;
no BLAS is called): each worker calls the same serial, GIL-free (nogil) kernel on its share,
so no kernel is compiled with numba's ``parallel=True``. That lowering made every
kernel compile two or three times over (the parfor's gufunc re-optimised the whole time
loop it called), and cost the first call of each function seconds. A launch of Python
threads costs tens of microseconds against ~3 us for numba's pool (docs/performance.md),
so a call launches as few times as it can: a time loop runs whole inside one launch, and
the products after a backward loop share one.

``set_num_threads`` sets the count for the calling Python thread (as numba's does).
Results are bit-identical for every thread count: no sum is ever split between threads
(see kernels/gemm.py).
"""

import operator
import os
import sys
import threading

import numba

from ._isa import PARALLEL_MIN_FLOPS

# One parallel call at a time: a second Python thread calling fastrnn meanwhile runs its
# kernel on one thread instead. That keeps two calls from oversubscribing the cores, and
# lets them share one pool of workers.
_parallel_launch = threading.Lock()

# Threads per Python thread: numba.config.NUMBA_NUM_THREADS (the cores this process may
# run on, or the NUMBA_NUM_THREADS environment variable) unless set_num_threads said less.
# Not numba.get_num_threads: asking it starts numba's threading layer, which no kernel
# uses (tenths of a second in a new process's first call).
class _PerThread(threading.local):
    # None: not set in this thread. A class attribute, so that reading it in a thread that
    # never set it finds it, rather than getattr's default catching an AttributeError
    # (0.8 us, paid on every call through kernel_threads).
    threads = None


_per_thread = _PerThread()


def set_num_threads(n):
    """Let fastrnn's kernels use n threads (n >= 1; more than numba.config.
    NUMBA_NUM_THREADS, the machine's cores by default, counts as that many). Applies to
    calls made from the calling Python thread, as numba.set_num_threads does."""
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer >= 1, got {n!r}") from None
    if n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n}")
    _per_thread.threads = min(n, numba.config.NUMBA_NUM_THREADS)


def get_num_threads():
    """The number of threads fastrnn's kernels may use in calls from this thread."""
    threads = _per_thread.threads
    return numba.config.NUMBA_NUM_THREADS if threads is None else threads


class kernel_threads:
    """``with kernel_threads(N, T, D, H, gates) as threads:`` how many threads the kernels of
    one call may use: numba's count from PARALLEL_MIN_FLOPS floating-point operations in the
    forward (below, waking the threads costs more than it saves), else 1; and 1 while
    another Python thread's parallel kernels run. The kernels take the count as an argument:
    numba cannot cache a kernel that asks for it. (A class, not contextlib: this runs on
    every call, and the generator version cost a microsecond.)"""

    __slots__ = ("threads", "locked")

    def __init__(self, N, T, D, H, gates):
        self.threads = 1
        self.locked = False
        if 2 * N * T * (D + H) * gates * H >= PARALLEL_MIN_FLOPS:
            threads = get_num_threads()
            if threads > 1 and _parallel_launch.acquire(blocking=False):
                self.threads, self.locked = threads, True

    def __enter__(self):
        return self.threads

    def __exit__(self, *exc_info):
        if self.locked:
            _parallel_launch.release()


class _Worker:
    """A daemon thread that runs one job at a time for run_workers, handed over through two
    locks. A launch costs tens of microseconds against numba's 3 us, whatever the hand-over
    (GIL-free spinning on atomic counters measured the same): the worker needs the GIL to
    call its kernel, and getting it from the caller is a thread wake-up each way."""

    def __init__(self):
        self.job = None
        self.error = None
        self.start_lock = threading.Lock()
        self.start_lock.acquire()
        self.done_lock = threading.Lock()
        self.done_lock.acquire()
        threading.Thread(target=self._loop, daemon=True, name="fastrnn-worker").start()

    def _loop(self):
        while True:
            self.start_lock.acquire()
            function, args = self.job
            self.job = None
            try:
                function(*args)
            except BaseException as error:  # handed to the caller, which raises it
                self.error = error
            # No references kept to the arrays while idle: the memory pool reuses a block
            # only once nothing refers to it (_memory.py counts references).
            del function, args
            self.done_lock.release()

    def start(self, function, args):
        self.job = (function, args)
        self.start_lock.release()

    def wait(self):
        self.done_lock.acquire()
        error, self.error = self.error, None
        return error


_workers = []


def _forget_workers():
    """In a forked child: the parent's worker threads do not exist there, and GNU libgomp's
    (_OpenMPPool) cannot be used at all (a child's parallel region can wait forever for
    them), so the child uses fastrnn's own threads only."""
    _workers.clear()
    _openmp.update(pool=None, off=True)


class _OpenMPPool:
    """The worker threads of the OpenMP runtime (libgomp) another library already loaded,
    PyTorch's CPU build above all. After each of its parallel regions libgomp's threads
    spin for milliseconds waiting for the next one, on the cores fastrnn's own threads
    would need (measured: an LSTM forward+backward right after a large torch op took 1.4x
    as long on fastrnn's threads); handed fastrnn's shares instead, those threads start at
    once. ``run(function, workers, args)`` calls function(w, workers, *args) for each
    w < workers on the team's threads, several shares per thread if the team is smaller
    (inside another parallel region it has one thread)."""

    def __init__(self, library):
        import ctypes
        self._parallel = library.GOMP_parallel
        self._parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint,
                                   ctypes.c_uint]
        self._parallel.restype = None
        self._thread_num = library.omp_get_thread_num
        self._team_size = library.omp_get_num_threads
        # Jobs by key, the key passed through GOMP_parallel's data pointer: a share that
        # runs a parallel call of its own (nested: a team of one) finds its own job.
        self._jobs = {}
        self._callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._body)

    def _body(self, key):
        function, workers, args, errors = self._jobs[key]
        try:
            for w in range(self._thread_num(), workers, self._team_size()):
                function(w, workers, *args)
        except BaseException as error:  # raised in the caller
            errors.append(error)

    def run(self, function, workers, args):
        errors = []
        key = id(errors)  # unique while the job runs
        self._jobs[key] = (function, workers, args, errors)
        try:
            self._parallel(self._callback, key, workers, 0)
        finally:
            del self._jobs[key]  # no references to the arrays kept (see _Worker._loop)
        if errors:
            raise errors[0]


# off: never look for libgomp (FASTRNN_OPENMP_POOL=0, the user's opt-out; a forked child;
# tests of fastrnn's own threads).
_openmp = {"pool": None, "modules_seen": -1,
           "off": os.environ.get("FASTRNN_OPENMP_POOL") == "0"}


def _openmp_pool():
    """An _OpenMPPool if libgomp is loaded in this process, else None; never loads it.
    Looked for again only when modules were imported since (an import is what loads it).
    FASTRNN_OPENMP_POOL=0 in the environment keeps fastrnn on its own threads."""
    if _openmp["off"]:
        return None
    if (_openmp["pool"] is None
            and len(sys.modules) != _openmp["modules_seen"]):
        _openmp["modules_seen"] = len(sys.modules)
        library = _loaded_libgomp()
        if library is not None:
            _openmp["pool"] = _OpenMPPool(library)
    return _openmp["pool"]


def _loaded_libgomp():
    """libgomp as a ctypes library if this process has loaded it, else None. By its soname
    first; with torch imported, also under a wheel's renamed copy (auditwheel renames
    vendored libraries, libgomp-<hash>.so.1), found in /proc/self/maps."""
    import ctypes
    names = ["libgomp.so.1"]
    if "torch" in sys.modules:
        try:
            with open("/proc/self/maps") as maps:
                names += sorted({line.split()[-1] for line in maps
                                 if "/libgomp" in line and line.rstrip().endswith(".so.1")})
        except OSError:
            pass
    for name in names:
        try:
            return ctypes.CDLL(name, mode=os.RTLD_NOLOAD)
        except (OSError, AttributeError):  # not loaded, or no RTLD_NOLOAD (Windows)
            continue
    return None


os.register_at_fork(after_in_child=_forget_workers)


def run_workers(function, workers, *args):
    """function(w, workers, *args) for w < workers, at the same time: on the threads of the
    OpenMP runtime when another library (PyTorch) has loaded one (see _OpenMPPool), else
    w = 0 on the calling thread and the others on fastrnn's worker threads. The kernels
    release the GIL (nogil), so the workers run in parallel; the caller holds the
    _parallel_launch lock (kernel_threads, step_split), so one call at a time uses a pool."""
    pool = _openmp_pool()
    if pool is not None:
        return pool.run(function, workers, args)
    while len(_workers) < workers - 1:
        _workers.append(_Worker())
    for w in range(1, workers):
        _workers[w - 1].start(function, (w, workers) + args)
    error = None
    try:
        function(0, workers, *args)
    except BaseException as raised:
        error = raised
    for w in range(1, workers):
        error = _workers[w - 1].wait() or error
    if error is not None:
        raise error
