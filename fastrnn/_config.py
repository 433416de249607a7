"""Jit options for every kernel, in one place.

- ``cache=True``: compiled machine code is written to ``__pycache__`` (or ``NUMBA_CACHE_DIR``)
  so a new process loads it in milliseconds instead of compiling for seconds. When no
  directory numba could use is writable (a read-only install and home), caching is turned
  off with a warning instead: numba would otherwise fail the import with
  "RuntimeError: cannot cache function".
- ``error_model="numpy"``: no zero-division check on every float division; that check blocks
  vectorisation of the gate math (see shared/PERF-FACTS.md).
- One cache stamp for every kernel (``kernel_sources_stamp``): numba marks a kernel's cache
  with its own file's modification time and size, but the machine code holds what the
  kernel calls from other files too (inlined or linked in: the split loops carry
  sync.py's barrier, every kernel _isa.py's constants), so an edit to one file left the
  kernels of the others running its old code. Stamped with all of them, any edit
  recompiles every kernel instead.
- ``fastmath``: none. With ``reassoc``/``contract``/``arcp`` LLVM rounded the same source
  differently depending on where a function was inlined: the serial time loop and its copy
  inside the parallel driver gave results differing in the last bits, so 1 and 2 threads
  disagreed (caught by the determinism test on a fresh CI build). Without them every
  operation is IEEE and results do not depend on the thread count. The elementwise loops
  vectorise all the same; the cost is a somewhat slower LSTM cell update (figures in
  docs/performance.md). (The micro-kernel's fused multiply-adds are explicit llvm.fma calls,
  unaffected.)
"""

import os
import tempfile
import warnings

from ._isa import TILE_OVERRIDDEN

FASTMATH_FLAGS = set()  # see above: no value-changing flags


def writable_directory(candidates):
    """The first of ``candidates`` that exists or can be made, and can be written to."""
    for directory in candidates:
        try:
            os.makedirs(directory, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                return directory
        except OSError:
            continue
    return None


def _cache_available():
    """Whether numba will find a writable cache directory: NUMBA_CACHE_DIR when set, else
    the kernels' __pycache__ or the user-wide cache (numba's own search order)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True
    from numba.misc.appdirs import AppDirs
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "__pycache__")
    user = AppDirs(appname="numba", appauthor=False).user_cache_dir
    if writable_directory([here, user]) is not None:
        return True
    warnings.warn("fastrnn: no writable directory for numba's kernel cache; kernels will be "
                  "compiled in every process (seconds per kernel). Set NUMBA_CACHE_DIR to a "
                  "writable directory to keep them.", RuntimeWarning, stacklevel=2)
    return False


# FASTRNN_TILE (_isa.py) changes compile-time constants numba's cache does not key on.
JIT_OPTIONS = dict(nogil=True, cache=not TILE_OVERRIDDEN and _cache_available(),
                   error_model="numpy",
                   fastmath=FASTMATH_FLAGS)

# The thresholds that decide threading, streamed stores and projection chunks depend on the
# target and live with the other ISA-dependent constants in _isa.py.


def _cache_loading_without_refresh():
    """numba's FunctionCache with a load_overload that initialises the NRT instead of
    refreshing the target context (see load_without_refreshing), and numba's
    FunctionCache; None where numba's cache is not the one this was written against."""
    try:
        from numba.core.caching import FunctionCache
        from numba.core.runtime import nrt
    except ImportError:
        return None
    if not all(hasattr(FunctionCache, name) for name in
               ("load_overload", "_load_overload", "_guard_against_spurious_io_errors")):
        return None

    class LoadWithoutRefreshing(FunctionCache):
        def load_overload(self, sig, target_context):
            nrt.rtsys.initialize(target_context)
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)
            # None when the guard swallowed an I/O error (numba's own behaviour)

    return LoadWithoutRefreshing, FunctionCache


_LOADING = _cache_loading_without_refresh()


def kernel_sources_stamp():
    """The cache stamp of every fastrnn kernel: (path, mtime in ns, size) of each file its
    compiled code can come from, the kernels/ modules and _isa.py and this one (their
    compile-time constants and options). Stat calls only, once per process."""
    package = os.path.dirname(os.path.abspath(__file__))
    kernels = os.path.join(package, "kernels")
    paths = sorted(os.path.join(kernels, name) for name in os.listdir(kernels)
                   if name.endswith(".py"))
    paths += [os.path.join(package, "_isa.py"), os.path.join(package, "_config.py")]
    stamp = []
    for path in paths:
        status = os.stat(path)
        stamp.append((os.path.relpath(path, package), status.st_mtime_ns, status.st_size))
    return tuple(stamp)


_SOURCES_STAMP = kernel_sources_stamp()


def setup_kernels(namespace):
    """Called at the end of each kernel module with its globals(): every fastrnn kernel in
    it (module-level dispatchers, and the split drivers' bound workers, kernels/split.py)
    is cached under kernel_sources_stamp, loads from numba's cache without refreshing
    numba's target context (load_without_refreshing) and compiles under its cross-process
    lock (_compiling.compile_once)."""
    from ._compiling import compile_once  # imported here: _compiling imports this module
    from numba.core.dispatcher import Dispatcher
    for value in list(namespace.values()):
        for kernel in (value, getattr(value, "worker", None)):
            if isinstance(kernel, Dispatcher):
                stamp_with_all_sources(kernel)
                load_without_refreshing(kernel)
                compile_once(kernel)


def stamp_with_all_sources(kernel):
    """Key a kernel's cache entries on kernel_sources_stamp rather than on its own file
    alone (see the module docstring). A numba whose cache keeps no such stamp is left as
    it is."""
    cache_file = getattr(getattr(kernel, "_cache", None), "_cache_file", None)
    if cache_file is not None and hasattr(cache_file, "_source_stamp"):
        cache_file._source_stamp = _SOURCES_STAMP


def load_without_refreshing(kernel):
    """Make a cached kernel (a numba dispatcher) load from numba's cache without first
    refreshing numba's target context.

    numba's cache refreshes the context before every load: it imports and installs all of
    numba's typing and lowering registries (most of numba's first-call cost in a warm
    process, about two thirds of a first lstm_forward + lstm_backward), which only
    compiling uses. Loading machine code needs just the NRT (the memory allocator the
    kernels call), initialised instead. A kernel that must be compiled after all still
    refreshes the context, as the compiler always does. Only fastrnn's own dispatchers
    change; with a numba whose cache differs from the one this was written against, they
    keep numba's own loading."""
    if _LOADING is None:
        return
    loading, numba_cache = _LOADING
    if type(kernel._cache) is numba_cache:
        kernel._cache.__class__ = loading
