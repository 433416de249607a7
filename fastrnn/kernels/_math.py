"""Scalar gate nonlinearities for the kernels, one source for float32 and float64.

float32: tanh is Eigen's clamped 13/6 rational approximation (max abs error ~3e-7 against
float64 tanh, a few float32 ulp), written in plain arithmetic with float32 constants so LLVM
vectorises it; numba's ``np.tanh``/``np.exp`` are scalar libm calls (~20 ns each) that never
vectorise here. The sigmoid is ``0.5 + 0.5 * tanh(0.5 * x)`` on top of it (abs error < 2e-7).

float64: the exact libm ``np.tanh``/``np.exp``: the tests hold float64 to 1e-10 relative and
no approximation this cheap is that accurate.
"""

import numpy as np
from numba import types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .._config import FASTMATH_FLAGS

# Eigen's ptanh_float coefficients (tanh(x) = x * P(x^2) / Q(x^2) on |x| <= CLAMP).
_F32 = np.float32
_CLAMP = _F32(7.90531110763549805)
_TINY = _F32(0.0004)
_A1, _A3, _A5, _A7 = _F32(4.89352455891786e-03), _F32(6.37261928875436e-04), _F32(1.48572235717979e-05), _F32(5.12229709037114e-08)
_A9, _A11, _A13 = _F32(-8.60467152213735e-11), _F32(2.00018790482477e-13), _F32(-2.76076847742355e-16)
_B0, _B2, _B4, _B6 = _F32(4.89352518554385e-03), _F32(2.26843463243900e-03), _F32(1.18534705686654e-04), _F32(1.19825839466702e-06)
_HALF32 = _F32(0.5)


def tanh(x):
    """Gate tanh: fast rational approximation for float32, exact for float64."""
    return np.tanh(x)


def sigmoid(x):
    """Gate sigmoid: via the fast tanh for float32, exact for float64."""
    return 1.0 / (1.0 + np.exp(-x))


def _is_float32(x):
    return isinstance(x, types.Float) and x.bitwidth == 32


@overload(tanh, jit_options={"fastmath": FASTMATH_FLAGS, "error_model": "numpy"})
def _tanh_impl(x):
    if _is_float32(x):
        def tanh_f32(x):
            # min/max rather than if/else keeps the loop branch-free for vectorisation.
            xc = min(max(x, -_CLAMP), _CLAMP)
            x2 = xc * xc
            p = x2 * _A13 + _A11
            p = x2 * p + _A9
            p = x2 * p + _A7
            p = x2 * p + _A5
            p = x2 * p + _A3
            p = x2 * p + _A1
            p = xc * p
            q = x2 * _B6 + _B4
            q = x2 * q + _B2
            q = x2 * q + _B0
            r = p / q
            # tanh(x) = x to float32 precision near 0, where the ratio loses relative accuracy.
            return x if abs(x) < _TINY else r
        return tanh_f32
    return lambda x: np.tanh(x)


@overload(sigmoid, jit_options={"fastmath": FASTMATH_FLAGS, "error_model": "numpy"})
def _sigmoid_impl(x):
    if _is_float32(x):
        return lambda x: _HALF32 + _HALF32 * tanh(_HALF32 * x)
    return lambda x: 1.0 / (1.0 + np.exp(-x))


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
