"""Scalar gate nonlinearities for the kernels, one source for float32 and float64.

float32: tanh is Eigen's clamped 13/6 rational approximation (max abs error ~3e-7 against
float64 tanh, a few float32 ulp), written in plain arithmetic with float32 constants so LLVM
vectorises it; numba's ``np.tanh``/``np.exp`` are scalar libm calls that never
vectorise here. The sigmoid is 1 / (1 + exp(-x)) on Cephes' expf (2**n from its exponent
bits), within 1.5e-7 relative of the true value for every normal output, so small gates
keep their relative accuracy (0.5 + 0.5 * tanh(x / 2) cancelled there).

float64: exp by exp(x / 64) ** 64 with a degree-17 Taylor polynomial on |x / 64| <= 0.7
(x clamped to [-44, 44], where the gates saturate anyway); tanh by Cephes' rational function
for |x| < 0.625 and 1 - 2 / (exp(2|x|) + 1) beyond (no cancellation either side); sigmoid as
1 / (1 + exp(-x)). Branch-free
plain arithmetic, so LLVM vectorises it in the kernels' loops: far cheaper per element than
numba's scalar libm calls, and so the whole float64 LSTM cell update too (figures in
docs/performance.md). Max
relative error against libm: tanh 7e-15 (2e-16 below |x| = 0.625), sigmoid 1.2e-14 for
x > -40 (below, absolute error < 5e-18): far inside the 1e-10 the tests hold float64 to.
"""

import math


import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from .._config import FASTMATH_FLAGS
from .._isa import FMA

# Eigen's ptanh_float coefficients (tanh(x) = x * P(x^2) / Q(x^2) on |x| <= CLAMP).
_F32 = np.float32
_CLAMP = _F32(7.90531110763549805)
_TINY = _F32(0.0004)
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = (_F32(c) for c in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_B0, _B2, _B4, _B6 = (_F32(c) for c in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))
_HALF32 = _F32(0.5)

# Cephes' expf: exp(x) = 2**n * exp(r), r = x - n ln 2 in two parts, |r| <= ln(2) / 2.
_LOG2E32 = _F32(1.44269504088896341)
_LN2_HI32, _LN2_LO32 = _F32(0.693359375), _F32(-2.12194440e-4)
_EXP_P32 = tuple(_F32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                   4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_ROUNDER32 = _F32(12582912.0)  # 1.5 * 2**23: adding and subtracting it rounds to an integer
_EXP_MIN32, _EXP_MAX32 = _F32(-87.0), _F32(88.0)  # 2**n stays a normal float32
_ONE32 = _F32(1.0)

# 1 / k! for the float64 Taylor polynomials.
_INV_FACT = tuple(1.0 / math.factorial(k) for k in range(18))


def emit_multiply_add(builder, a, b, c):
    """a * b + c in LLVM IR, for values of one float or float-vector type: llvm.fma (one
    rounding) where the target has FMA instructions (_isa.FMA); else a multiply and an add,
    since llvm.fma would be a scalar libm call per lane there and stop vectorisation. The one
    place that choice is made, for the gate math here and the micro-kernel (kernels/gemm.py)."""
    if not FMA:
        return builder.fadd(builder.fmul(a, b), c)
    ty = a.type
    scalar = ty.element if isinstance(ty, ir.VectorType) else ty
    suffix = "f32" if isinstance(scalar, ir.FloatType) else "f64"
    lanes = f"v{ty.count}" if isinstance(ty, ir.VectorType) else ""
    name = f"llvm.fma.{lanes}{suffix}"
    function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3), name)
    return builder.call(function, [a, b, c])


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma; vectorises). Written out because the kernels are
    compiled without fast-math contraction (see _config): the polynomials keep their
    fused multiply-adds, and the same bits wherever LLVM inlines them. A multiply and an add
    on targets without FMA (emit_multiply_add)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return emit_multiply_add(builder, *args)

    return a(a, b, c), codegen


@intrinsic
def float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the low 32 bits of the integer ``bits`` (an LLVM
    bitcast; vectorises)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = args[0]
        if signature.args[0].bitwidth != 32:
            low = builder.trunc(low, ir.IntType(32))
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@njit(inline="always", error_model="numpy", fastmath=FASTMATH_FLAGS)
def _exp_f32(x):
    """exp(x) for float32 to ~1 ulp relative, x clamped to [-87, 88]: Cephes' expf, with
    2**n built from its exponent bits. Branch-free, so LLVM vectorises it."""
    xc = min(max(x, _EXP_MIN32), _EXP_MAX32)
    n = (xc * _LOG2E32 + _ROUNDER32) - _ROUNDER32
    r = fma(n, -_LN2_HI32, xc)
    r = fma(n, -_LN2_LO32, r)
    p = fma(_EXP_P32[0], r, _EXP_P32[1])
    p = fma(p, r, _EXP_P32[2])
    p = fma(p, r, _EXP_P32[3])
    p = fma(p, r, _EXP_P32[4])
    p = fma(p, r, _EXP_P32[5])
    e = fma(p, r * r, r) + _ONE32
    # In int32, not int: without AVX-512 there is no vector float -> int64 conversion, and
    # LLVM made the whole sigmoid loop scalar around it.
    return e * float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


def tanh(x):
    """Gate tanh: fast rational approximation for float32, vectorisable exp-based float64."""
    return np.tanh(x)


def sigmoid(x):
    """Gate sigmoid: via the fast tanh for float32, vectorisable exp-based float64."""
    return 1.0 / (1.0 + np.exp(-x))


@njit(inline="always", error_model="numpy", fastmath=FASTMATH_FLAGS)
def _exp_small(r):
    """exp(r) for |r| <= 0.7, float64, to ~1 ulp: Taylor polynomial of degree 17."""
    p = fma(r, _INV_FACT[17], _INV_FACT[16])
    p = fma(r, p, _INV_FACT[15])
    p = fma(r, p, _INV_FACT[14])
    p = fma(r, p, _INV_FACT[13])
    p = fma(r, p, _INV_FACT[12])
    p = fma(r, p, _INV_FACT[11])
    p = fma(r, p, _INV_FACT[10])
    p = fma(r, p, _INV_FACT[9])
    p = fma(r, p, _INV_FACT[8])
    p = fma(r, p, _INV_FACT[7])
    p = fma(r, p, _INV_FACT[6])
    p = fma(r, p, _INV_FACT[5])
    p = fma(r, p, _INV_FACT[4])
    p = fma(r, p, _INV_FACT[3])
    p = fma(r, p, _INV_FACT[2])
    p = fma(r, p, _INV_FACT[1])
    return fma(r, p, 1.0)


@njit(inline="always", error_model="numpy", fastmath=FASTMATH_FLAGS)
def _exp_f64(x):
    """exp(x), x clamped to [-44, 44]: exp(x / 64) ** 64 by six squarings (branch-free)."""
    e = _exp_small(min(max(x, -44.0), 44.0) * 0.015625)
    e = e * e
    e = e * e
    e = e * e
    e = e * e
    e = e * e
    return e * e


# Cephes' tanh for |x| < 0.625: x + x^3 P(x^2) / Q(x^2), Q monic (relative error ~3e-16).
_TP0, _TP1, _TP2 = -1.61468768441708447952e3, -9.92877231001918586564e1, -9.64399179425052238628e-1
_TQ0, _TQ1, _TQ2 = 4.84406305325125486048e3, 2.23548839060100448583e3, 1.12811678491632931402e2


@njit(inline="always", error_model="numpy", fastmath=FASTMATH_FLAGS)
def _tanh_f64(x):
    """tanh(x): Cephes' rational function near 0, 1 - 2 / (exp(2|x|) + 1) elsewhere.

    Kept small on purpose: LLVM inlines it into the kernels' loops (and so vectorises them)
    only below its size threshold; a version with a second 17-term polynomial stayed a
    call and the loops scalar, several times slower per element.
    """
    z = x * x
    near_zero = fma(x * z, fma(fma(_TP2, z, _TP1), z, _TP0)
                    / fma(fma(z + _TQ2, z, _TQ1), z, _TQ0), x)
    a = min(abs(x), 20.0)  # tanh(20) = 1 in float64
    far = 1.0 - 2.0 / (_exp_f64(2.0 * a) + 1.0)
    far = far if x >= 0.0 else -far
    r = near_zero if abs(x) < 0.625 else far
    return r if x == x else x  # NaN stays NaN


def _is_float32(x):
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(tanh, jit_options={"fastmath": FASTMATH_FLAGS, "error_model": "numpy"})
def _tanh_impl(x):
    if _is_float32(x):
        def tanh_f32(x):
            # min/max rather than if/else keeps the loop branch-free for vectorisation.
            xc = min(max(x, -_CLAMP), _CLAMP)
            x2 = xc * xc
            p = fma(x2, _A13, _A11)
            p = fma(x2, p, _A9)
            p = fma(x2, p, _A7)
            p = fma(x2, p, _A5)
            p = fma(x2, p, _A3)
            p = fma(x2, p, _A1)
            p = xc * p
            q = fma(x2, _B6, _B4)
            q = fma(x2, q, _B2)
            q = fma(x2, q, _B0)
            r = p / q
            # tanh(x) = x to float32 precision near 0, where the ratio loses relative accuracy.
            return x if abs(x) < _TINY else r
        return tanh_f32
    return lambda x: _tanh_f64(x)


@overload(sigmoid, jit_options={"fastmath": FASTMATH_FLAGS, "error_model": "numpy"})
def _sigmoid_impl(x):
    if _is_float32(x):
        # 1 / (1 + exp(-x)) keeps a small sigmoid's relative accuracy; 0.5 + 0.5 tanh(x / 2)
        # cancelled there (tanh's absolute error near -1 carried over, a large relative
        # error on gates near 0, such as a small forget gate, and so on dc0 = f * dc).
        def sigmoid_f32(x):
            s = _ONE32 / (_ONE32 + _exp_f32(-x))
            return s if x == x else x  # NaN stays NaN
        return sigmoid_f32
    return lambda x: 1.0 / (1.0 + _exp_f64(-x))


def one_of(arr):
    """1 in arr's dtype: a bare ``1.0`` literal would promote float32 arithmetic to float64."""
    return arr.dtype.type(1)


def zero_of(arr):
    """0 in arr's dtype (see one_of)."""
    return arr.dtype.type(0)


def _typed_constant(value):
    def impl_factory(arr):
        constant = as_dtype(arr.dtype).type(value)
        return lambda arr: constant
    return impl_factory


overload(one_of)(_typed_constant(1))
overload(zero_of)(_typed_constant(0))
