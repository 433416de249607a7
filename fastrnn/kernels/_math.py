"""Scalar gate nonlinearities for the kernels, one source for float32 and float64, within
2 ulp of the exact values (tests/test_math.py measures them through the public API against
long double: float64 sigmoid 1.5 ulp, tanh 1.2; float32 sigmoid 2.2, tanh 1.3; NumPy's
tanh 1.1 and 1.3). Plain arithmetic, branch-free (both sides of a split computed and one
selected), so LLVM vectorises the kernels' loops around them; numba's ``np.tanh`` and
``np.exp`` are scalar libm calls that never vectorise here.

exp: Cody-Waite range reduction x = n ln2 + r with ln2 in two parts, a polynomial in r,
2**n built from its exponent bits (float32: Cephes' expf; float64: Taylor to degree 13).
sigmoid: 1 / (1 + exp(-x)), which keeps a small gate's relative accuracy (0.5 + 0.5 *
tanh(x / 2) cancelled there); in float64 the rounding error of 1 + exp(-x) is taken back
out (TwoSum), worth up to 2 ulp just below 0.5. tanh: Cephes' odd polynomial (float32) or
rational function (float64) below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) beyond, where the
result is >= 0.55 and nothing cancels.

History: float64 exp was exp(x / 64) ** 64, whose six squarings multiplied its error by 64
(sigmoid 93 ulp, tanh 33: a float64 gradient check read 2e-5 where NumPy's read 6e-7), and
float32 tanh Eigen's clamped rational function (3e-7 absolute, 4.3 ulp near 1). The
accurate float32 tanh costs ~30 % more in the gate math alone (an exp and a division);
float64 is as fast as before (docs/performance.md).
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

_F32 = np.float32

# Cephes' expf: exp(x) = 2**n * exp(r), r = x - n ln 2 in two parts, |r| <= ln(2) / 2.
_LOG2E32 = _F32(1.44269504088896341)
_LN2_HI32, _LN2_LO32 = _F32(0.693359375), _F32(-2.12194440e-4)
_EXP_P32 = tuple(_F32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                   4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_ROUNDER32 = _F32(12582912.0)  # 1.5 * 2**23: adding and subtracting it rounds to an integer
_EXP_MIN32, _EXP_MAX32 = _F32(-87.0), _F32(88.0)  # 2**n stays a normal float32
_ONE32 = _F32(1.0)
_TWO32, _ZERO32 = _F32(2.0), _F32(0.0)

# Cephes' tanhf: tanh(x) = x + x^3 P(x^2) for |x| < 0.625.
_TF4, _TF3, _TF2, _TF1, _TF0 = (_F32(c) for c in (
    -5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1))
_TANH_SPLIT32 = _F32(0.625)
_TANH_ONE32 = _F32(9.0)  # tanh(9) = 1 in float32; keeps exp(2|x|) finite

# 1 / k! for the float64 Taylor polynomial of exp.
_INV_FACT = tuple(1.0 / math.factorial(k) for k in range(14))
# exp's range reduction (fdlibm's e_exp.c): ln2 = _LN2_HI + _LN2_LO, _LN2_HI with 32 bits.
_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_ROUNDER = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer in the low bits
_ROUNDER_BITS = int(np.float64(_ROUNDER).view(np.int64))


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


def _bitcast(is_source, result, llvm_result, doc):
    """An intrinsic reinterpreting a 64-bit value's bits as ``result`` (an LLVM bitcast;
    vectorises), for arguments whose numba type passes is_source."""
    @intrinsic
    def bitcast(typingctx, value):
        if not is_source(value):
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_result)

        return result(value), codegen
    bitcast.__doc__ = doc
    return bitcast


float64_from_bits = _bitcast(lambda t: isinstance(t, types.Integer) and t.bitwidth == 64,
                             types.float64, ir.DoubleType(),
                             "The float64 whose IEEE bits are the int64 ``bits``.")
float64_bits = _bitcast(lambda t: isinstance(t, types.Float) and t.bitwidth == 64,
                        types.int64, ir.IntType(64),
                        "The IEEE bits of the float64 ``value`` as an int64.")


@njit(inline="always", error_model="numpy", fastmath=FASTMATH_FLAGS)
def _expf(x, top_term):
    """Cephes' expf on an x within [-87, 88], 2**n built from its exponent bits; without
    the polynomial's top term when ``top_term`` is False (a constant at every call site,
    folded by LLVM). Branch-free, so LLVM vectorises it."""
    n = (x * _LOG2E32 + _ROUNDER32) - _ROUNDER32
    r = fma(n, -_LN2_HI32, x)
    r = fma(n, -_LN2_LO32, r)
    p = fma(_EXP_P32[0], r, _EXP_P32[1]) if top_term else _EXP_P32[1]
    p = fma(p, r, _EXP_P32[2])
    p = fma(p, r, _EXP_P32[3])
    p = fma(p, r, _EXP_P32[4])
    p = fma(p, r, _EXP_P32[5])
    e = fma(p, r * r, r) + _ONE32
    # In int32, not int: without AVX-512 there is no vector float -> int64 conversion, and
    # LLVM made the whole sigmoid loop scalar around it.
    return e * float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(inline="always", error_model="numpy", fastmath=FASTMATH_FLAGS)
def _exp_f32(x):
    """exp(x) for float32 to ~1 ulp relative, x clamped to [-87, 88]."""
    return _expf(min(max(x, _EXP_MIN32), _EXP_MAX32), True)


@njit(inline="always", error_model="numpy", fastmath=FASTMATH_FLAGS)
def _exp_f32_short(x):
    """exp(x) for 0 <= x <= 18, float32, to ~3e-7 relative, unclamped and without the
    polynomial's top term: all tanh's far side needs (see tanh_f32)."""
    return _expf(x, False)


def tanh(x):
    """Gate tanh: fast rational approximation for float32, vectorisable exp-based float64."""
    return np.tanh(x)


def sigmoid(x):
    """Gate sigmoid: via the fast tanh for float32, vectorisable exp-based float64."""
    return 1.0 / (1.0 + np.exp(-x))


@njit(inline="always", error_model="numpy", fastmath=FASTMATH_FLAGS)
def _exp_f64(x):
    """exp(x) for float64 to ~1 ulp, x clamped to [-708, 708] (normal results): Cody-Waite
    reduction x = n ln2 + r, |r| <= ln2 / 2, with ln2 in two parts (fdlibm's; n * ln2_hi
    is exact), exp(r) by its Taylor polynomial of degree 13 (truncation 4e-18 relative),
    and 2**n from the exponent bits. n comes out of the rounding constant's low mantissa
    bits, as an int64 add and shift: there is no vector float64 -> int64 conversion
    without AVX-512. Branch-free, so LLVM vectorises it."""
    xc = min(max(x, -708.0), 708.0)
    shifted = fma(xc, _LOG2E, _ROUNDER)
    n = shifted - _ROUNDER
    r = fma(n, -_LN2_HI, xc)
    r = fma(n, -_LN2_LO, r)
    p = fma(r, _INV_FACT[13], _INV_FACT[12])
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
    p = fma(r, p * r, r) + 1.0  # 1 + r + r^2 p, the 1 added last (small terms first)
    two_n = float64_from_bits((float64_bits(shifted) - _ROUNDER_BITS + 1023) << 52)
    return p * two_n


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


@njit(inline="always", error_model="numpy", fastmath=FASTMATH_FLAGS)
def _sigmoid_f64(x):
    """1 / (1 + e), e = exp(-x), with the rounding error of 1 + e taken back out: the sum's
    error is found exactly (TwoSum) and 1 / (d + err) = q - q^2 err to first order, q = 1 / d.
    Without it the sum alone cost up to 2 ulp just below 0.5."""
    e = _exp_f64(-x)
    d = 1.0 + e
    d_e = d - 1.0
    err = (1.0 - (d - d_e)) + (e - d_e)
    q = 1.0 / d
    s = fma(-q, q * err, q)
    return s if x == x else x  # NaN stays NaN


def _is_float32(x):
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(tanh, jit_options={"fastmath": FASTMATH_FLAGS, "error_model": "numpy"})
def _tanh_impl(x):
    if _is_float32(x):
        def tanh_f32(x):
            # Cephes' tanhf: an odd polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1)
            # beyond (no cancellation either side: the result there is >= 0.55). Both
            # evaluated and one selected, branch-free, so the loops vectorise.
            z = x * x
            p = fma(_TF4, z, _TF3)
            p = fma(p, z, _TF2)
            p = fma(p, z, _TF1)
            p = fma(p, z, _TF0)
            near_zero = fma(p * z, x, x)
            a = min(abs(x), _TANH_ONE32)
            far = _ONE32 - _TWO32 / (_exp_f32_short(a + a) + _ONE32)
            far = far if x >= _ZERO32 else -far
            return far if abs(x) >= _TANH_SPLIT32 else near_zero  # NaN: near_zero, NaN
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
    return lambda x: _sigmoid_f64(x)


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
