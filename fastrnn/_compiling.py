"""Compiling fastrnn's kernels on a cold cache: each kernel once across processes, and a
first call's biggest kernels in a helper process beside it.

numba compiles on one thread, under a lock of its own process, and its cache helps only the
processes that start after a kernel is saved. Two things follow for a first call:

- **One compile per kernel across processes.** Processes that start together (pytest-xdist's
  workers, a pool's, a cluster's) each compiled the same kernels at the same time. Every
  fastrnn kernel now compiles under a lock file beside its cache files (``fcntl.flock``, one
  per kernel function): a process that finds another compiling a kernel waits for it and
  loads the result from the cache (numba's compile looks there first).
- **A helper process.** Each path of a call names (``Ahead``) the biggest kernels it
  reaches last, and a training forward its backward's too; where some are not in the cache
  yet, a helper Python process compiles them into it while the call compiles the rest
  (the README's Compile time section has the figures). Both
  take each kernel's lock before compiling it, so whichever reaches a kernel first
  compiles it and the other loads it: a late helper costs nothing but its own start.

Both rely only on numba's cache, which is keyed by each kernel's exact argument types: the
helper compiles each kernel for ``address.array_types(dtype, layout)``, the types a call
passes it, so what it saves is what the call looks up. Where the cache is off or ``fcntl``
is missing (Windows), neither happens; nor the helper on one core, or where sys.executable
is not a Python (an application embedding one). FASTRNN_COMPILE_AHEAD=0 turns the helper
off (``precompile``'s jobs, the test suite's xdist workers and CI's ISA runs set it: they
keep every core busy already).
"""

import os
import sys
import time

try:
    import fcntl
except ImportError:  # Windows: no locks, no helper
    fcntl = None

from ._config import JIT_OPTIONS
from .kernels.address import array_types

LOCK_POLL_SECONDS = 0.002
# A lock held longer than this (a process stopped in a debugger) is ignored: better to
# compile twice than to wait without end.
LOCK_PATIENCE_SECONDS = 600.0

_held = {}  # path -> open lock file, for the locks this process holds (never wait on itself)
_helpers = []  # pids of the helper processes started here, until reaped (_reap)


def _lock_path(dispatcher):
    """The lock file of one kernel function, in its cache directory (None: no cache)."""
    directory = getattr(getattr(dispatcher, "_cache", None), "cache_path", None)
    if directory is None:
        return None
    function = dispatcher.py_func
    return os.path.join(directory, f"{function.__module__}.{function.__qualname__}.lock")


class _kernel_lock:
    """``with _kernel_lock(path):`` this process alone compiles the kernel (or waits for
    another that does, then loads it from the cache). No lock where none can be taken."""

    __slots__ = ("path", "file")

    def __init__(self, path):
        self.path = path
        self.file = None

    def __enter__(self):
        if self.path is None or fcntl is None or self.path in _held:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            lock_file = open(self.path, "a")
        except OSError:
            return
        deadline = time.monotonic() + LOCK_PATIENCE_SECONDS
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock_file.close()
                    return
                time.sleep(LOCK_POLL_SECONDS)
            except OSError:  # a file system without locks
                lock_file.close()
                return
        self.file = lock_file
        _held[self.path] = lock_file

    def __exit__(self, *exc_info):
        if self.file is not None:
            _held.pop(self.path, None)
            self.file.close()  # releases the lock (the last descriptor of its file)
            self.file = None


def _close_inherited_locks():
    """In a forked child: close the lock files inherited from a compile in progress in the
    parent (another thread's). A flock belongs to the open file, which the child's copy
    would keep locked after the parent closed its own, until the child ended; closing the
    copy (not unlocking: the parent still compiles) leaves the lock to the parent."""
    for lock_file in _held.values():
        lock_file.close()
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


def compile_once(dispatcher):
    """Make ``dispatcher`` compile (or load from the cache) under its kernel's lock file.
    numba calls ``compile`` only for argument types it has not loaded in this process, so
    the lock costs a file open per kernel and process, never a call."""
    if not JIT_OPTIONS["cache"] or fcntl is None or hasattr(dispatcher.compile, "locked"):
        return  # (a kernel module's namespace also holds the kernels it imports)
    from numba.core.compiler_lock import global_compiler_lock
    path = _lock_path(dispatcher)
    compile_unlocked = dispatcher.compile

    def compile(sig):
        # The file lock inside numba's own (re-entrant) compiler lock, as numba's compile
        # takes it: a thread then never holds a kernel's file lock while it waits for
        # another thread's compile, so the file locks a process holds follow one chain
        # of calls (a kernel, then what it calls), and two processes cannot wait on each
        # other in a circle.
        with global_compiler_lock, _kernel_lock(path):
            return compile_unlocked(sig)

    compile.__doc__ = compile_unlocked.__doc__
    compile.locked = True
    dispatcher.compile = compile


def _available(dispatcher, signature):
    """Whether ``dispatcher`` has ``signature`` loaded here or in numba's cache (its index
    file). True when that cannot be told: no helper is started for it then."""
    if signature in dispatcher.overloads:
        return True
    try:
        cache = dispatcher._cache
        key = cache._index_key(signature, dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # another numba's cache internals: never start a helper for them
        return True


def _helper_allowed():
    # sys.executable must be a Python to run "-c" (not an application embedding one, nor a
    # frozen program).
    executable = os.path.basename(sys.executable or "").lower()
    if (not JIT_OPTIONS["cache"] or fcntl is None or "python" not in executable
            or getattr(sys, "frozen", False)):
        return False
    if os.environ.get("FASTRNN_COMPILE_AHEAD") == "0":
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores > 1


class Ahead:
    """The kernels one path of a call compiles last, as (dispatcher, layout) pairs in the
    order the helper takes them (the one the path reaches last first: the call reaches
    the others before the helper could): ``Ahead(...).ask(dtype)`` at the start of the
    path starts a helper process for those not yet compiled for ``dtype``. Once per dtype
    and process: later calls pay a set lookup."""

    __slots__ = ("kernels", "asked", "compiled", "_then")

    def __init__(self, *kernels):
        self.kernels = kernels
        self.asked = set()
        self.compiled = set()
        self._then = {}

    def then(self, other):
        """The Ahead of these kernels followed by ``other``'s, made once per pair: for a
        path standing in for another while a helper compiles that one's kernels (after
        the stand-in's own: _core.compiled_loop_split)."""
        combined = self._then.get(other)
        if combined is None:
            combined = self._then[other] = Ahead(*self.kernels, *other.kernels)
        return combined

    def ready(self, dtype):
        """Whether the kernels are compiled for ``dtype`` (loaded here, or in numba's
        cache), or no helper could compile them (the call then compiles them itself). For
        a path that an equivalent one (the same bits) can stand in for while a helper
        compiles them (the stand-in's Ahead listing them too): a cold cache's first calls
        then do not wait for them. True from the first time it is true."""
        char = dtype.char
        if char in self.compiled:
            return True
        if not _helper_allowed() or all(_available(kernel, array_types(dtype, layout))
                                        for kernel, layout in self.kernels):
            self.compiled.add(char)
            return True
        return False

    def ask(self, dtype):
        char = dtype.char
        if char in self.asked:
            return
        self.asked.add(char)
        if not _helper_allowed():
            return
        missing = [(kernel, layout) for kernel, layout in self.kernels
                   if not _available(kernel, array_types(dtype, layout))]
        if missing:
            _start(missing, dtype)


def _start(kernels, dtype):
    """A helper process compiling ``kernels`` ((dispatcher, layout) pairs) for ``dtype``
    into numba's cache, in that order; its output discarded. Never raises: without a
    helper, the call compiles everything itself.

    Started with os.posix_spawn and kept as a bare pid, not a subprocess.Popen: a helper
    may outlive its parent (it finishes compiling for the next process), and a Popen still
    running at exit is reported as a leaked resource."""
    _reap(block=False)
    jobs = [(*_where(kernel), layout) for kernel, layout in kernels]
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, FASTRNN_COMPILE_AHEAD="0")
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    command = [sys.executable, "-c",
               f"from fastrnn._compiling import compile_jobs; "
               f"compile_jobs({jobs!r}, {dtype.name!r})"]
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    try:
        _helpers.append(os.posix_spawn(sys.executable, command, env, file_actions=quiet))
    except (OSError, AttributeError):  # no posix_spawn here
        pass


def _reap(block):
    """Collect the helpers that have ended (all of them, waiting, when ``block``)."""
    for pid in list(_helpers):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            done = pid
        if done:
            _helpers.remove(pid)


def wait_for_helpers():
    """Wait until every helper process started here has ended (tests, measurements)."""
    _reap(block=True)


def _where(kernel):
    """(module, name) by which the helper finds ``kernel``: a kernel module's global, or
    a split driver's bound worker (name "<driver>.worker", kernels/split.py)."""
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith(__package__ + ".kernels."):
            for name, value in vars(module).items():
                if value is kernel:
                    return module_name, name
                if getattr(value, "worker", None) is kernel:
                    return module_name, name + ".worker"
    raise LookupError(f"{kernel} is not a kernel module's")


def compile_jobs(jobs, dtype):
    """The helper's work: compile each (module, name, layout) of ``jobs`` (see _where)
    for ``dtype`` (numba's cache keeps it)."""
    import importlib
    for module, name, layout in jobs:
        kernel = importlib.import_module(module)
        for attribute in name.split("."):
            kernel = getattr(kernel, attribute)
        kernel.compile(array_types(dtype, layout))
