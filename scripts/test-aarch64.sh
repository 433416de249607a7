#!/usr/bin/env bash
# Run a focused subset of fastrnn's pytest suite on aarch64, under QEMU user-mode emulation,
# on an x86_64 machine.
#
# Why: the kernels are Numba @njit code with hand-written LLVM intrinsics (llvm.fma,
# non-temporal stores, bit casts) and a GEMM whose tiles were tuned on x86; this checks
# that they compile for and give the right numbers on another ISA.
#
# How: there is no binfmt_misc on these machines, so debootstrap's second stage (which runs
# the target's binaries through the kernel) cannot run. It does not need to: unpacking the
# downloaded arm64 .debs gives a root with an aarch64 python3.11 and its libraries, and
# `qemu-aarch64-static -L ROOT` runs that python with its dynamic loader and libraries taken
# from ROOT. numpy, numba, pytest and hypothesis are pip-installed (aarch64 wheels) into a
# separate --target directory, put on PYTHONPATH together with the checkout.
#
# Usage:  scripts/test-aarch64.sh [PYTEST ARGS...]
#   No arguments: the focused default selection below. With arguments: they are passed to
#   pytest instead of the default selection (node ids relative to the checkout, e.g.
#   tests/test_gemm.py::test_matmul_empty_dimensions, or -k EXPR tests/test_kernels.py).
# Environment:
#   FASTRNN_AARCH64_ROOT        cache directory (default ~/.cache/fastrnn-aarch64)
#   FASTRNN_AARCH64_PIP         pip requirement specs for the emulated site-packages
#   FASTRNN_AARCH64_MIRROR      Debian mirror for debootstrap (default deb.debian.org)
#   FASTRNN_AARCH64_KEEP_NUMBA_CACHE=1  reuse compiled kernels from the previous run (see below)
#
# Exit code: pytest's, except that "no tests collected" (5) becomes 1: a selection that
# matches nothing must not pass silently.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${FASTRNN_AARCH64_ROOT:-$HOME/.cache/fastrnn-aarch64}
ROOT=$CACHE/root    # the arm64 Debian root (unpacked .debs)
SITE=$CACHE/site    # pip --target directory: numpy, numba, llvmlite, pytest, hypothesis
SUITE=bookworm      # Debian 12: python3.11, for which numpy/numba publish aarch64 wheels
MIRROR=${FASTRNN_AARCH64_MIRROR:-http://deb.debian.org/debian}
# Pinned to the versions the x86 CI resolves today, so a run is reproducible; override to try
# others (a change of specs reinstalls, see the marker below).
PIP_SPECS=${FASTRNN_AARCH64_PIP:-numpy==2.4.6 numba==0.68.1 llvmlite==0.50.0 pytest==9.2.0 hypothesis==6.170.17}
QEMU=qemu-aarch64-static

log() { printf '[test-aarch64 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$CACHE"
setup_start=$SECONDS

# --- 1. host tools: qemu-user-static (the emulator) and debootstrap (fetches the .debs).
# Installed only when missing, so repeated runs need neither root nor the network here.
missing=()
for pkg in qemu-user-static debootstrap; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
    log "installing host packages: ${missing[*]}"
    "${SUDO[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q "${missing[@]}"
fi

# Each step below writes its marker only after it succeeded, so an interrupted step is redone
# from scratch on the next run instead of leaving a half-built root that looks finished.

# --- 2. first stage of debootstrap: downloads the arm64 .debs into ROOT/var/cache/apt/archives
# (and unpacks the essential ones). --foreign: the second stage would need to execute arm64
# binaries natively, which needs binfmt_misc.
if [ ! -e "$CACHE/.debootstrap-done" ]; then
    log "debootstrap --foreign arm64 $SUITE into $ROOT"
    rm -rf "$ROOT"
    debootstrap --foreign --arch=arm64 --variant=minbase \
        --include=python3,libpython3.11,python3-pip "$SUITE" "$ROOT" "$MIRROR"
    touch "$CACHE/.debootstrap-done"
fi

# --- 3. unpack every downloaded .deb: the first stage unpacks only the base set, not
# python3 and its dependencies (those would be unpacked by the second stage). Maintainer
# scripts are not run; python needs none of them.
if [ ! -e "$CACHE/.unpack-done" ]; then
    log "unpacking $(ls "$ROOT"/var/cache/apt/archives/*.deb | wc -l) .debs into $ROOT"
    for deb in "$ROOT"/var/cache/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$ROOT"
    done
    touch "$CACHE/.unpack-done"
fi

# The emulated python. -L makes qemu resolve the dynamic loader and every absolute path it
# opens inside ROOT first (falling back to the host's file, e.g. /etc/resolv.conf).
PY=("$QEMU" -L "$ROOT" "$ROOT/usr/bin/python3.11")

# --- 4. the Python packages, aarch64 wheels, into SITE. --target bypasses Debian's
# EXTERNALLY-MANAGED guard (PEP 668 exempts --target), so no --break-system-packages.
# The marker holds the specs: changing FASTRNN_AARCH64_PIP reinstalls.
if [ ! -e "$CACHE/.pip-done" ] || [ "$(cat "$CACHE/.pip-done")" != "$PIP_SPECS" ]; then
    log "pip install --target $SITE $PIP_SPECS (emulated, a minute or two)"
    rm -rf "$SITE"
    # shellcheck disable=SC2086  # PIP_SPECS is a list of specs
    PIP_CACHE_DIR=$CACHE/pip-cache "${PY[@]}" -m pip install --quiet --no-warn-script-location \
        --target "$SITE" $PIP_SPECS
    printf '%s' "$PIP_SPECS" > "$CACHE/.pip-done"
fi

# --- 5. a pytest plugin, kept in the cache (not the checkout), that times every numba
# compilation and lists them after the tests: under emulation each kernel takes about a
# minute to compile, and this tells which ones a selection pays for.
PLUGINS=$CACHE/plugins
mkdir -p "$PLUGINS"
cat > "$PLUGINS/aarch64_compile_log.py" <<'EOF'
"""Times numba Dispatcher.compile calls (kernel name, argument types, seconds); a summary
after the tests. Loaded by scripts/test-aarch64.sh with -p aarch64_compile_log."""
import time

from numba.core.dispatcher import Dispatcher

_records = []
_depth = [0]
_original = Dispatcher.compile


def _timed_compile(self, sig):
    _depth[0] += 1
    start = time.perf_counter()
    try:
        return _original(self, sig)
    finally:
        _depth[0] -= 1
        _records.append((time.perf_counter() - start, _depth[0], self.py_func.__module__,
                         self.py_func.__qualname__, str(sig)))


Dispatcher.compile = _timed_compile


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    tr.section("numba compilations (emulated aarch64)")
    total = 0.0
    for seconds, depth, module, name, sig in _records:
        if seconds < 0.5:  # loaded from numba's cache or a trivial helper
            continue
        if depth == 0:
            total += seconds
        tr.write_line(f"{seconds:7.1f} s  {'  ' * depth}{module}.{name}{sig}")
    tr.write_line(f"{total:7.1f} s  total (outermost compilations)")
EOF
setup_seconds=$((SECONDS - setup_start))
log "setup done in ${setup_seconds}s (cache: $CACHE)"

# --- 6. the test run.
# Default selection: small enough that compilation stays well under 15 minutes (each distinct
# kernel and argument-type signature compiles once: 10-50 s under emulation, 85 s for the
# first lstm_train_small; about 8 minutes in all), yet covering:
# - the transposed copy of fastrnn.torch's weights and the backward's transposed packing
#   of the weights (NEON's 4 x 4 / 2 x 2 register tiles);
# - the GEMM against NumPy in float32 and float64: two shapes on one thread (gemm_part with
#   C- and F-ordered operands, accumulation and pre-packed B), and the larger one on two
#   threads (fastrnn's worker threads, the same serial kernel);
# - the LSTM forward and backward against fastrnn.reference in float64 and float32, on a
#   shape whose backward gets dx inside the time loop (N5T11D7H13) and one that gets it from
#   a GEMM after the loop (N2T5D67H3): same kernels, so the second shape costs no compile;
# - one GRU (float32) and one RNN (tanh, float64) forward and backward against the reference.
# All of these are small calls, so they take the serial kernels.
DEFAULT_SELECTION=(
    "tests/test_gemm.py::test_matmul_matches_numpy[1-(7, 13, 70)-float32]"
    "tests/test_gemm.py::test_matmul_matches_numpy[1-(7, 13, 70)-float64]"
    "tests/test_gemm.py::test_matmul_matches_numpy[1-(100, 300, 129)-float32]"
    "tests/test_gemm.py::test_matmul_matches_numpy[1-(100, 300, 129)-float64]"
    "tests/test_gemm.py::test_matmul_matches_numpy[2-(100, 300, 129)-float32]"
    "tests/test_gemm.py::test_matmul_matches_numpy[2-(100, 300, 129)-float64]"
    "tests/test_gemm.py::test_matmul_empty_dimensions"
    "tests/test_gemm.py::test_transpose_into_equals_numpy_transpose[(17, 9)-float32]"
    "tests/test_gemm.py::test_transpose_into_equals_numpy_transpose[(17, 9)-float64]"
    "tests/test_gemm.py::test_transposed_packing_equals_packing_the_transpose[(29, 256)-float32]"
    "tests/test_gemm.py::test_transposed_packing_equals_packing_the_transpose[(64, 37)-float64]"
    "tests/test_kernels.py::test_forward_and_gradients_match_reference[lstm-N5T11D7H13-float64]"
    "tests/test_kernels.py::test_forward_and_gradients_match_reference[lstm-N5T11D7H13-float32]"
    "tests/test_kernels.py::test_forward_and_gradients_match_reference[lstm-N2T5D67H3-float64]"
    "tests/test_kernels.py::test_forward_and_gradients_match_reference[lstm-N2T5D67H3-float32]"
    "tests/test_kernels.py::test_forward_and_gradients_match_reference[gru-N5T11D7H13-float32]"
    "tests/test_kernels.py::test_forward_and_gradients_match_reference[rnn_tanh-N5T11D7H13-float64]"
    "tests/test_split.py::test_split_inference_kernel_equals_row_schedule_for_any_part_count[N1T9D70H90-float64-False]"
    "tests/test_split.py::test_gru_split_kernel_equals_row_schedule_for_any_part_count[N3T13D5H37-float32-True-training]"
    "tests/test_split.py::test_rnn_split_kernel_equals_row_schedule_for_any_part_count[N3T13D5H37-float32-True-training-relu]"
    "tests/test_split.py::test_gru_split_backward_kernel_equals_row_schedule_for_any_part_count[N3T13D5H37-float32-True]"
    "tests/test_split.py::test_rnn_split_backward_kernel_equals_row_schedule_for_any_part_count[N3T13D5H37-float32-True-relu]"
)
if [ $# -gt 0 ]; then
    SELECTION=("$@")
else
    SELECTION=("${DEFAULT_SELECTION[@]}")
fi

# Nothing may be written into the checkout (others work in it): no .pyc files
# (PYTHONDONTWRITEBYTECODE, which pytest's assertion rewriting honours too), no
# .pytest_cache (-p no:cacheprovider), numba's kernel cache outside it (NUMBA_CACHE_DIR; also
# keeps fastrnn._config from creating kernels/__pycache__), and pytest runs from a scratch
# directory so hypothesis's .hypothesis database lands there (pytest is given the checkout as
# --rootdir and its pyproject.toml as config, and the test paths made absolute below).
RUN_DIR=$CACHE/run
mkdir -p "$RUN_DIR"
# Numba's cache keys a kernel on its own source file only, not on the files whose functions it
# inlines (gemm.py, _math.py, ...): a kept cache can hand back stale machine code after an
# edit elsewhere. So each run starts from an empty numba cache unless asked otherwise.
NUMBA_CACHE=$CACHE/numba-cache
if [ "${FASTRNN_AARCH64_KEEP_NUMBA_CACHE:-0}" != 1 ]; then
    rm -rf "$NUMBA_CACHE"
fi
mkdir -p "$NUMBA_CACHE"

ARGS=()
have_path=0
for arg in "${SELECTION[@]}"; do
    # A test path or node id relative to the checkout (tests/...) is made absolute, since
    # pytest runs from RUN_DIR; options, -k expressions and absolute paths pass unchanged.
    if [[ $arg == tests/* || $arg == tests ]]; then
        ARGS+=("$REPO/$arg")
        have_path=1
    else
        [[ $arg == /* ]] && have_path=1
        ARGS+=("$arg")
    fi
done
# Only options given (e.g. -k EXPR): pytest would search RUN_DIR, as testpaths applies only
# when it runs from the rootdir; search the checkout's tests instead.
[ "$have_path" -eq 1 ] || ARGS+=("$REPO/tests")

export PYTHONPATH=$SITE:$REPO:$PLUGINS
export PYTHONDONTWRITEBYTECODE=1
export NUMBA_CACHE_DIR=$NUMBA_CACHE
cd "$RUN_DIR"

# The log must show the tests really ran on aarch64: the interpreter's machine and the CPU
# that LLVM (hence numba) generates code for ("generic" under qemu-user, whose /proc/cpuinfo
# names no aarch64 part; numba then targets baseline armv8-a, NEON included).
"${PY[@]}" -c '
import platform, sys
import llvmlite.binding as llvm, numba, numpy
print("python", sys.version.split()[0], "on", platform.platform(), "| machine:", platform.machine())
print("llvmlite.binding.get_host_cpu_name():", llvm.get_host_cpu_name())
print("numpy", numpy.__version__, "| numba", numba.__version__, "| llvmlite", llvm.llvm_version_info)
if platform.machine() != "aarch64":
    sys.exit("not running on aarch64")
# The target fastrnn compiles its kernels for (ISA, GEMM tiles), where this version has it.
import fastrnn
if hasattr(fastrnn, "show_config"):
    fastrnn.show_config()
'

test_start=$SECONDS
set +e  # pytest's exit status is the script's result, handled below
"${PY[@]}" -m pytest -p no:cacheprovider -p aarch64_compile_log --rootdir "$REPO" \
    -c "$REPO/pyproject.toml" -v --durations=0 "${ARGS[@]}"
status=$?
set -e
log "setup ${setup_seconds}s, tests $((SECONDS - test_start))s, pytest exit status $status"
if [ "$status" -eq 5 ]; then
    log "pytest collected no tests: that is a failure"
    exit 1
fi
exit "$status"
