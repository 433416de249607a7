"""Training utilities: gradient clipping (PyTorch's formulas) and the opt-in finite check.

Exploding gradients in vanilla RNNs are clipped; NaN or Inf, once in a state, would
otherwise propagate silently through every later step.
"""

import math
import numbers

import numpy as np

from . import _validate


def _named_arrays(grads):
    """(names, arrays, rebuild) for a list/tuple of arrays or a dict of them: rebuild(new
    arrays) gives the same kind of container back."""
    if isinstance(grads, dict):
        names = list(grads)
        return [repr(k) for k in names], list(grads.values()), lambda new: dict(zip(names, new))
    if isinstance(grads, (list, tuple)):
        return ([str(i) for i in range(len(grads))], list(grads),
                lambda new: type(grads)(new) if isinstance(grads, tuple) else list(new))
    raise TypeError(f"grads must be a list, tuple or dict of float arrays, "
                    f"got {type(grads).__name__}")


def _checked_arrays(grads, inplace):
    names, arrays, rebuild = _named_arrays(grads)
    checked = []
    for name, a in zip(names, arrays):
        if not isinstance(a, np.ndarray) or a.dtype not in _validate.SUPPORTED_DTYPES:
            kind = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"grads[{name}] must be a float32 or float64 ndarray, got {kind}")
        if inplace and not a.flags.writeable:
            raise ValueError(f"grads[{name}] is read-only; it cannot be clipped in place")
        checked.append(a)
    return names, checked, rebuild


def _non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}")
    value = float(value)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def clip_grad_norm(grads, max_norm, *, error_if_nonfinite=True, inplace=False):
    """Scale gradients so that their joint L2 norm is at most ``max_norm``, as
    ``torch.nn.utils.clip_grad_norm_`` does.

    grads: a list, tuple or dict of float32/float64 arrays (e.g. dWx, dWh, db).
    The total norm is the L2 norm of all their elements together (summed in float64).
    Every array is multiplied by min(1, max_norm / (total_norm + 1e-6)), PyTorch's
    coefficient (so arrays whose norm is a hair under max_norm are scaled by a hair, as
    there), in its own dtype. New arrays unless ``inplace`` (then the arrays themselves
    are scaled and returned). Returns (clipped, total_norm), clipped of grads' kind.

    A NaN or Inf total raises FloatingPointError naming the first array that holds one;
    with ``error_if_nonfinite=False`` the arrays are scaled as PyTorch scales them (NaN
    everywhere for a NaN total; an infinite one scales by 0). An empty ``grads`` gives
    (empty, 0.0).
    """
    names, arrays, rebuild = _checked_arrays(grads, inplace)
    max_norm = _non_negative("max_norm", max_norm)
    if not arrays:
        return rebuild([]), 0.0
    norms = [float(np.linalg.norm(a.ravel().astype(np.float64, copy=False))) for a in arrays]
    total = math.sqrt(math.fsum(n * n for n in norms))
    if not math.isfinite(total) and error_if_nonfinite:
        first = next((n for n, a in zip(names, arrays) if not np.isfinite(a).all()), None)
        where = (f"grads[{first}] holds NaN or Inf" if first is not None
                 else "the squares overflow float64")
        raise FloatingPointError(
            f"the total norm of the gradients is {total}: {where} (error_if_nonfinite=False "
            f"scales them anyway, as torch does)")
    coefficient = max_norm / (total + 1e-6)
    coefficient = min(coefficient, 1.0) if not math.isnan(coefficient) else coefficient
    clipped = []
    with np.errstate(invalid="ignore"):  # Inf * 0 is NaN, as in torch, without a warning
        for a in arrays:
            factor = a.dtype.type(coefficient)
            if inplace:
                a *= factor
                clipped.append(a)
            else:
                clipped.append(a * factor)
    return rebuild(clipped), total


def clip_grad_value(grads, clip_value, *, inplace=False):
    """Clip every element into [-clip_value, clip_value], as
    ``torch.nn.utils.clip_grad_value_`` does (NaN stays NaN).

    grads: a list, tuple or dict of float32/float64 arrays. New arrays unless ``inplace``.
    Returns the clipped arrays, of grads' kind.
    """
    _, arrays, rebuild = _checked_arrays(grads, inplace)
    clip_value = _non_negative("clip_value", clip_value)
    clipped = []
    for a in arrays:
        low, high = a.dtype.type(-clip_value), a.dtype.type(clip_value)
        clipped.append(np.clip(a, low, high, out=a) if inplace else np.clip(a, low, high))
    return rebuild(clipped)
