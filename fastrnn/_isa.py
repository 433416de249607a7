"""Which CPU the kernels are compiled for, and every constant that depends on it.

The one place where the vector ISA is decided (the BLIS model: one small configuration per
architecture; the packing, the loops around the micro-kernel and the time loops are shared
and read these numbers). The choice follows the target numba compiles for, not
/proc/cpuinfo: llvmlite's host CPU name and features, or ``NUMBA_CPU_NAME`` /
``NUMBA_CPU_FEATURES`` when set (numba reads them, and so does this module).

Targets (``TARGET.isa``):
  avx512   x86-64 with AVX-512F: 32 registers of 64 bytes
  avx2     x86-64 with AVX2 and FMA: 16 registers of 32 bytes
  neon     aarch64 (Advanced SIMD and FMA are baseline there): 32 registers of 16 bytes
  generic  anything else, e.g. x86-64 without AVX2/FMA: 16-byte vectors, multiply then add

The micro-kernel keeps an MR x NR block of C in ``MR * VECTORS`` vector registers, NR =
VECTORS * VECTOR_BYTES / itemsize columns: the tile must leave registers for the B vectors
and the broadcast A value, or LLVM spills the accumulators to memory in the inner loop.

Results are bit-identical for any thread count on every target; results of different targets
differ from each other in the last bits (another tile shape sums in another order, and
``generic`` rounds a multiply and an add separately).

Numba's cache keys compiled kernels on the target (CPU name and features) and on the source
file of each kernel, not on the values here: after editing a constant below, clear the caches
(a fresh ``NUMBA_CACHE_DIR``, or delete fastrnn's ``__pycache__/*.nbi``).
"""

import os
import platform
from dataclasses import dataclass, replace

import llvmlite.binding as llvm
from numba.core import config as numba_config


@dataclass(frozen=True)
class Target:
    """One architecture's kernel configuration (see the module docstring)."""
    isa: str
    vector_bytes: int      # bytes per vector register the micro-kernel's IR uses
    vectors: int           # vectors of C per tile row: NR = vectors * vector_bytes / itemsize
    mr: int                # rows of C per micro-kernel call in the big GEMM
    mr_step: int           # rows per call in the time loops' per-step products
    kc_bytes: int          # k-block depth of the GEMM and per-step products, bytes per row
    fma: bool              # fused multiply-add instructions (else multiply, then add)
    # Calls with fewer floating-point operations than this in their forward run on one
    # thread: below it, waking the worker threads (tens of microseconds per launch, and a
    # backward launches twice) costs more than the second core saves (docs/performance.md).
    parallel_min_flops: int = 12_000_000
    # A single step of one row tile splits its hidden units between the threads from this
    # many floating-point operations: each worker then reads only its share. Below, waking
    # a second thread costs more than halving the reads (on the Zen 4 the split lost up to
    # 4.2 M and won from 8.4 M: docs/performance.md).
    step_split_min_flops: int = 6_000_000
    # A time loop over one row tile (too few sequences to share out by rows) splits its
    # hidden units between the threads from this many floating-point operations per step:
    # the threads are woken once per call, and the workers then meet once per step at a
    # barrier costing a fraction of a microsecond (kernels/sync.py).
    loop_split_min_flops: int = 250_000
    # The GRU's and RNN's (less gate math per product FLOP than the LSTM's): on Zen 3 the
    # split broke even around 0.26-0.39 MFLOP a step ((100, 1, 256, 256) RNN 0.76-1.11x,
    # (100, 2, 128, 128) GRU 0.69-1.42x) and won from 0.5 ((100, 2, 256, 256) RNN 1.18x,
    # (100, 1, 256, 256) GRU 1.62x).
    light_loop_split_min_flops: int = 400_000
    # The training forward writes its cache with non-temporal stores (kernels/stream.py)
    # from this many bytes: rows that big would not stay in the caches anyway.
    stream_min_bytes: int = 8 << 20
    # The time loops project the inputs of S steps at a time (_core.chunk_steps): S grows
    # until each worker streams at most this many bytes of Wx per step and row, up to
    # max_chunk_steps (a multiple of mr, see kernels/gemm.steps_product).
    chunk_bytes_per_row: int = 32 << 10
    max_chunk_steps: int = 30
    # The products after a backward loop pack a big B operand (da) once, with pack_panels,
    # before the launch, instead of gemm_part packing it k-block by k-block inside each
    # worker (_core.products). Measured on the AVX-512 Zen 4 only: there it made the
    # backward 3-11 % faster; compiled for AVX2 or SSE2 on the same machine, 3-8 % slower
    # (docs/performance.md), so those keep gemm_part's packing.
    pack_b_before_launch: bool = False
    # k's of W each chain of the in-place products (a single step, kernels/gemm.
    # step_product_in_place) takes per sweep of the columns, for one row (W's rows >= 3 KB
    # apart) and for MR_STEP rows: each sweep loads and stores its partial sums once, so a
    # deeper one spends more of the loads on W, until the broadcast values of A no longer
    # fit in the registers (best depths measured on the Zen 4: docs/performance.md).
    row_stream_depth: int = 8
    step_stream_depth: int = 4

    def columns_per_panel(self, itemsize):
        """NR: columns of C per micro-kernel call for a dtype of ``itemsize`` bytes."""
        return self.vectors * self.vector_bytes // itemsize


# BLIS's choices are the starting point (haswell sgemm 6 x 16 / dgemm 6 x 8; armv8a dgemm
# 6 x 8); the shapes below are the ones measured fastest inside fastrnn's time loops and GEMM
# (docs/performance.md).
CONFIGURATIONS = {
    # 24 of 32 zmm registers accumulate: 6 x 64 float32, 6 x 32 float64.
    "avx512": Target("avx512", vector_bytes=64, vectors=4, mr=6, mr_step=4, kc_bytes=2048,
                     fma=True, pack_b_before_launch=True),
    # 12 of 16 ymm registers accumulate: 4 x 24 float32, 4 x 12 float64. BLIS haswell's
    # 6 x 16 was slower in fastrnn's GEMM (docs/performance.md): LLVM steps from row to
    # row of A with one dependent add per row and k, so 6 rows made a chain as long as the
    # 12 FMAs take; and the time loops' 4-row step tiles get 12 accumulators, not 8.
    "avx2": Target("avx2", vector_bytes=32, vectors=3, mr=4, mr_step=4, kc_bytes=2048,
                   fma=True, max_chunk_steps=28),
    # 24 of 32 q registers accumulate: 6 x 16 float32, 6 x 8 float64 (BLIS armv8a dgemm).
    # Not measured on aarch64 hardware yet: chosen by register count, checked under QEMU;
    # parallel_min_flops as it was before it was measured on the x86 VM.
    "neon": Target("neon", vector_bytes=16, vectors=4, mr=6, mr_step=4, kc_bytes=2048,
                   fma=True, parallel_min_flops=4_000_000),
    # SSE2 has 16 xmm registers and no FMA: each multiply-add needs a temporary, so 12
    # accumulators leave room for the B vectors, the broadcast and the products. Its
    # slower products repay a launch from fewer FLOPs.
    "generic": Target("generic", vector_bytes=16, vectors=2, mr=6, mr_step=4, kc_bytes=2048,
                      fma=False, parallel_min_flops=6_000_000, row_stream_depth=4,
                      step_stream_depth=2),
}


def numba_target():
    """(architecture, cpu name, set of enabled features) numba compiles for: the host's,
    or NUMBA_CPU_NAME / NUMBA_CPU_FEATURES as numba itself reads them (numba.core.config;
    ``NUMBA_CPU_NAME=generic`` means no optional features)."""
    machine = llvm.get_process_triple().split("-")[0].lower() or platform.machine().lower()
    cpu = numba_config.CPU_NAME or llvm.get_host_cpu_name()
    features = numba_config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    enabled = {f[1:].strip() for f in features.split(",") if f.strip().startswith("+")}
    return machine, cpu, enabled


def choose(machine, features):
    """The configuration name for an architecture and its enabled features. A feature
    NUMBA_CPU_FEATURES does not list counts as absent (the safe side: every configuration
    computes correct results on every target, only slower on a wider one)."""
    if machine in ("x86_64", "amd64"):
        if "avx512f" in features:
            return "avx512"
        if {"avx2", "fma"} <= features:
            return "avx2"
        return "generic"
    if machine in ("aarch64", "arm64"):
        return "neon"
    return "generic"


def tile_override(target, text):
    """``target`` with FASTRNN_TILE="MR,VECTORS,MR_STEP,KC_BYTES" applied: for measuring
    other tiles on a machine (kernels are then compiled in every process, see _config)."""
    try:
        mr, vectors, mr_step, kc_bytes = (int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"FASTRNN_TILE must be 'MR,VECTORS,MR_STEP,KC_BYTES' (four integers, "
                         f"e.g. '6,2,4,2048'), got {text!r}") from None
    if min(mr, vectors, mr_step, kc_bytes) < 1:
        raise ValueError(f"FASTRNN_TILE values must be >= 1, got {text!r}")
    return replace(target, mr=mr, vectors=vectors, mr_step=mr_step, kc_bytes=kc_bytes)


MACHINE, CPU_NAME, CPU_FEATURES = numba_target()
TARGET = CONFIGURATIONS[choose(MACHINE, CPU_FEATURES)]
# Numba's cache does not key on these constants, so an override must not share it.
TILE_OVERRIDDEN = bool(os.environ.get("FASTRNN_TILE"))
if TILE_OVERRIDDEN:
    TARGET = tile_override(TARGET, os.environ["FASTRNN_TILE"])

# The names the kernels read as compile-time constants.
VECTOR_BYTES = TARGET.vector_bytes
VECTORS = TARGET.vectors
MR = TARGET.mr
MR_STEP = TARGET.mr_step
KC_BYTES = TARGET.kc_bytes
FMA = TARGET.fma
PARALLEL_MIN_FLOPS = TARGET.parallel_min_flops
STEP_SPLIT_MIN_FLOPS = TARGET.step_split_min_flops
LOOP_SPLIT_MIN_FLOPS = TARGET.loop_split_min_flops
LIGHT_LOOP_SPLIT_MIN_FLOPS = TARGET.light_loop_split_min_flops
STREAM_MIN_BYTES = TARGET.stream_min_bytes
CHUNK_BYTES_PER_ROW = TARGET.chunk_bytes_per_row
MAX_CHUNK_STEPS = TARGET.max_chunk_steps
PACK_B_BEFORE_LAUNCH = TARGET.pack_b_before_launch
ROW_STREAM_DEPTH = TARGET.row_stream_depth
STEP_STREAM_DEPTH = TARGET.step_stream_depth


def describe():
    """A dict saying which target and tile the kernels use (fastrnn.show_config prints it)."""
    return {
        "isa": TARGET.isa + (" (FASTRNN_TILE)" if TILE_OVERRIDDEN else ""),
        "machine": MACHINE,
        "cpu": CPU_NAME,
        "numba_cpu_name": numba_config.CPU_NAME,
        "numba_cpu_features_set": numba_config.CPU_FEATURES is not None,
        "vector_bytes": VECTOR_BYTES,
        "fma": FMA,
        "gemm_tile_float32": f"{MR} x {TARGET.columns_per_panel(4)}",
        "gemm_tile_float64": f"{MR} x {TARGET.columns_per_panel(8)}",
        "step_tile_rows": MR_STEP,
        "kc_float32": KC_BYTES // 4,
        "kc_float64": KC_BYTES // 8,
    }
