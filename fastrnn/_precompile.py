"""Compile fastrnn's kernels ahead of use: ``fastrnn.precompile()`` and
``python -m fastrnn.precompile``.

Each (cell, dtype) pair is a job run in a fresh Python process, several at a time (numba
compiles on one thread, so jobs on different cores overlap). A job calls every public
function of its cell on small inputs chosen to take every path the kernels have (one
sequence tile or many, the column-split time loop and step of few sequences with big H,
ragged lengths, single steps), so that each kernel a user can reach is compiled and written
to numba's cache. Later processes load them from there in milliseconds.

The cache is where numba would put it anyway (``NUMBA_CACHE_DIR`` if set, else beside the
package or in numba's user-wide directory), and is keyed by the CPU: precompile on the
kind of machine that will run the code (a Docker image built on the machine type it runs
on, a cluster's workers).
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CELLS = ("lstm", "gru", "rnn")
DTYPES = ("float32", "float64")

# (N, T, D, H) of the sequence calls: one row tile on one worker; enough rows for several
# workers; a single sequence with a step big enough for the column split (the LSTM's and
# the GRU's: enough FLOPs for two threads with the GRU's three gate blocks too); one big
# enough for the RNN's (one gate block).
SEQUENCE_SHAPES = [(2, 3, 5, 8), (40, 8, 64, 128), (1, 26, 64, 256), (1, 24, 64, 512)]
# (N, D, H) of the step calls: one worker reading the weights in place; a step split
# between threads; a batch of several row tiles.
STEP_SHAPES = [(1, 16, 32), (2, 256, 512), (12, 16, 32)]


def _weights(cell, D, H, rng, dtype):
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    Wx = (rng.standard_normal((D, gates * H)) * 0.1).astype(dtype)
    Wh = (rng.standard_normal((H, gates * H)) * 0.1).astype(dtype)
    biases = [np.zeros(gates * H, dtype) for _ in range(2 if cell == "gru" else 1)]
    return [Wx, Wh, *biases]


def _exercise(cell, dtype):
    """Call every public function of ``cell`` on inputs of ``dtype`` that take each path."""
    import fastrnn
    forward = getattr(fastrnn, f"{cell}_forward")
    backward = getattr(fastrnn, f"{cell}_backward")
    inference = getattr(fastrnn, f"{cell}_inference")
    step_forward = getattr(fastrnn, f"{cell}_step_forward")
    step_backward = getattr(fastrnn, f"{cell}_step_backward")
    rng = np.random.default_rng(0)
    for N, T, D, H in SEQUENCE_SHAPES:
        x = rng.standard_normal((N, T, D)).astype(dtype)
        h0 = np.zeros((N, H), dtype)
        weights = _weights(cell, D, H, rng, dtype)
        for lengths in (None, np.arange(N) % (T + 1)):
            h, cache = forward(x, h0, *weights, lengths=lengths)
            backward(np.ones_like(h), cache)
            inference(x, h0, *weights, lengths=lengths)
    for N, D, H in STEP_SHAPES:
        x = rng.standard_normal((N, D)).astype(dtype)
        h0 = np.zeros((N, H), dtype)
        weights = _weights(cell, D, H, rng, dtype)
        state = (h0, h0) if cell == "lstm" else (h0,)
        *next_state, cache = step_forward(x, *state, *weights)
        step_backward(*(np.ones_like(s) for s in next_state), cache)
    # fastrnn.torch's conversion of the weights (compiled here too: it needs no torch).
    from .kernels.transpose import transpose_into
    transpose_into(np.ones((3, 2), dtype), np.arange(3), np.empty((2, 3), dtype))


def _job_command(cell, dtype):
    return [sys.executable, "-c",
            f"from fastrnn._precompile import _exercise; _exercise({cell!r}, {dtype!r})"]


def precompile(cells=CELLS, dtypes=DTYPES, processes=None, progress=True):
    """Compile (and cache) every kernel the given cells can run in the given dtypes.

    cells: names among "lstm", "gru", "rnn"; dtypes: among "float32", "float64";
    processes: jobs at once (default: the machine's cores); progress: print a line per
    finished job to stderr. Returns {(cell, dtype): seconds}. Raises RuntimeError naming
    the job if one fails.
    """
    cells, dtypes = tuple(cells), tuple(dtypes)
    for name, values, allowed in (("cells", cells, CELLS), ("dtypes", dtypes, DTYPES)):
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise ValueError(f"{name} must be a non-empty selection of {allowed}, got {values}")
    jobs = [(cell, dtype) for cell in cells for dtype in dtypes]
    processes = max(1, processes or os.cpu_count() or 1)
    pending, running, seconds = list(jobs), {}, {}
    start = time.perf_counter()
    while pending or running:
        while pending and len(running) < processes:
            job = pending.pop(0)
            # stderr to a file, not a pipe: a pipe read only at the end would block a job
            # that writes more than its buffer holds (warnings, a long traceback).
            errors = tempfile.TemporaryFile("w+")
            # No compile helpers (fastrnn/_compiling.py): the jobs keep the cores busy.
            running[job] = (subprocess.Popen(_job_command(*job), stdout=subprocess.DEVNULL,
                                             stderr=errors, text=True,
                                             env=dict(os.environ, FASTRNN_COMPILE_AHEAD="0")),
                            errors, time.perf_counter())
        for job, (process, errors, began) in list(running.items()):
            if process.poll() is None:
                continue
            del running[job]
            errors.seek(0)
            message = errors.read()
            errors.close()
            if process.returncode:
                for other, _, _ in running.values():
                    other.kill()
                raise RuntimeError(f"precompiling {job[0]} {job[1]} failed:\n{message}")
            seconds[job] = time.perf_counter() - began
            if progress:
                done = len(seconds)
                bar = "#" * (20 * done // len(jobs))
                print(f"[{bar:<20}] {done}/{len(jobs)} {job[0]} {job[1]}: "
                      f"{seconds[job]:.1f} s (total {time.perf_counter() - start:.1f} s)",
                      file=sys.stderr, flush=True)
        time.sleep(0.05)
    return seconds


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(
        prog="python -m fastrnn.precompile",
        description="Compile and cache fastrnn's kernels, so that the first calls of later "
                    "processes load them in milliseconds.")
    parser.add_argument("--cells", default=",".join(CELLS),
                        help="comma-separated, among lstm,gru,rnn (default: all)")
    parser.add_argument("--dtypes", default=",".join(DTYPES),
                        help="comma-separated, among float32,float64 (default: both)")
    parser.add_argument("--processes", type=int, default=None,
                        help="jobs at once (default: the machine's cores)")
    args = parser.parse_args(argv)
    try:
        seconds = precompile(args.cells.split(","), args.dtypes.split(","), args.processes)
    except (ValueError, RuntimeError) as error:
        parser.exit(1, f"{error}\n")
    print(f"compiled {len(seconds)} cell/dtype pairs into numba's cache")

