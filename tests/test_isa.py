"""The target the kernels are compiled for (fastrnn/_isa.py): chosen from numba's target, not
the host's, and the machine code really is of that ISA.

CI runs the ISA-sensitive tests once per x86 target the machine can execute (.ci/run), with
FASTRNN_EXPECT_ISA naming the configuration each run must get; a run that silently fell back
to another target would fail here rather than test the wrong code.
"""

import os
import platform

import llvmlite.binding as llvm
import numpy as np
import pytest
from numba import njit
from numba.core import config as numba_config

import fastrnn
from fastrnn import _isa
from fastrnn.kernels._math import sigmoid, tanh
from fastrnn.kernels.gemm import micro_kernel, panel_width, times_transposed


@pytest.mark.parametrize("machine, features, expected", [
    ("x86_64", {"avx", "avx2", "fma", "avx512f", "avx512bw"}, "avx512"),
    ("x86_64", {"avx", "avx2", "fma"}, "avx2"),
    ("x86_64", {"avx", "avx2"}, "generic"),          # AVX2 without FMA
    ("x86_64", {"avx", "fma"}, "generic"),           # AVX without AVX2
    ("x86_64", {"sse2", "sse4.2"}, "generic"),
    ("x86_64", set(), "generic"),                     # NUMBA_CPU_NAME=generic: no features
    ("aarch64", set(), "neon"),                       # NEON and FMA are baseline on aarch64
    ("aarch64", {"neon", "fp-armv8"}, "neon"),
    ("ppc64le", {"altivec", "vsx"}, "generic"),
])
def test_configuration_follows_the_features(machine, features, expected):
    assert _isa.choose(machine, features) == expected


def test_target_is_numbas_target():
    machine, cpu, features = _isa.numba_target()
    assert cpu == (numba_config.CPU_NAME or llvm.get_host_cpu_name())
    if numba_config.CPU_FEATURES is not None:
        listed = {f[1:] for f in numba_config.CPU_FEATURES.split(",") if f.startswith("+")}
        assert features == listed
    assert _isa.TARGET.isa == _isa.choose(machine, features)
    expected = os.environ.get("FASTRNN_EXPECT_ISA")
    if expected:  # set by .ci/run for each target it tests
        assert _isa.TARGET.isa == expected, (
            f"expected the {expected} configuration, got {_isa.TARGET.isa} "
            f"(NUMBA_CPU_NAME={numba_config.CPU_NAME}, "
            f"NUMBA_CPU_FEATURES={numba_config.CPU_FEATURES})")


def test_show_config_names_the_tile():
    with open(os.devnull, "w") as devnull:
        info = fastrnn.show_config(file=devnull)
    nr32 = _isa.VECTORS * _isa.VECTOR_BYTES // 4
    assert info["isa"] == _isa.TARGET.isa
    assert info["gemm_tile_float32"] == f"{_isa.MR} x {nr32}"
    assert info["gemm_tile_float64"] == f"{_isa.MR} x {nr32 // 2}"
    assert info["threads"] == fastrnn.get_num_threads()


def test_every_configuration_fits_its_registers():
    registers = {"avx512": 32, "avx2": 16, "neon": 32, "generic": 16}
    for name, target in _isa.CONFIGURATIONS.items():
        # MR * VECTORS accumulators, VECTORS vectors of B, one broadcast of A (and, without
        # FMA, one product): more than the register file and the inner loop spills.
        live = target.mr * target.vectors + target.vectors + 1 + (0 if target.fma else 1)
        assert live <= registers[name], name
        assert target.max_chunk_steps % target.mr == 0, name


@pytest.mark.parametrize("text", ["6,2,4", "a,b,c,d", "6,0,4,2048"])
def test_tile_override_is_checked(text):
    with pytest.raises(ValueError, match="FASTRNN_TILE"):
        _isa.tile_override(_isa.TARGET, text)


def test_tile_override_replaces_the_tile_only():
    changed = _isa.tile_override(_isa.CONFIGURATIONS["avx2"], "4,3,6,1024")
    assert (changed.isa, changed.mr, changed.vectors, changed.mr_step, changed.kc_bytes,
            changed.vector_bytes, changed.fma) == ("avx2", 4, 3, 6, 1024, 32, True)


@njit(error_model="numpy")
def _one_tile_and_gates(A, B, C, kc, x, y, dots):
    """One MR x NR micro-kernel tile, C = A @ B (A packed k-major, B one panel), the dot
    kernel (dots: B's rows with x's first NR values) and the gate functions over x:
    compiled here, uncached, so its machine code can be read."""
    NR = panel_width(C)
    micro_kernel(A, 0, 1, _isa.MR, B, 0, NR, C, 0, NR, kc, False)
    times_transposed(x[:NR].reshape(1, NR), B, dots)
    for i in range(x.shape[0]):
        y[i] = sigmoid(x[i]) + tanh(x[i])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="x86 register names")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_machine_code_is_of_the_chosen_isa(dtype):
    """The micro-kernel's, the dot kernel's and the gate math's machine code use the target's vector registers
    and no wider ones, and fused multiply-adds exactly where the configuration has them
    (never a libm fma call)."""
    NR = _isa.TARGET.columns_per_panel(np.dtype(dtype).itemsize)
    kc = 5
    rng = np.random.default_rng(0)
    A = rng.standard_normal((_isa.MR, kc)).astype(dtype)
    B = rng.standard_normal((kc, NR)).astype(dtype)
    C = np.empty((_isa.MR, NR), dtype)
    x = np.linspace(-3, 3, 64).astype(dtype)
    y = np.empty_like(x)
    dots = np.empty((1, kc), dtype)
    _one_tile_and_gates(np.ascontiguousarray(A.T), B, C, kc, x, y, dots)
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dots[0], B.astype(np.float64) @ x[:NR], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.astype(np.float64))) + np.tanh(x),
                               rtol=1e-5)
    asm = "\n".join(_one_tile_and_gates.inspect_asm().values())
    widest = {"avx512": "zmm", "avx2": "ymm", "generic": "xmm"}[_isa.TARGET.isa]
    assert widest in asm
    for wider in ("ymm", "zmm")[("xmm", "ymm", "zmm").index(widest):]:
        assert wider not in asm, f"{wider} registers in {_isa.TARGET.isa} code"
    assert ("vfmadd" in asm) == _isa.FMA
    assert not [line for line in asm.splitlines() if "call" in line and "fma" in line]
