"""How many threads fastrnn's matrix products use.

fastrnn's kernels are serial; its threads are those of the BLAS its matrix products call:
SciPy's OpenBLAS (what numba's ``np.dot`` calls, inside the kernels) and, for completeness,
NumPy's. Both are set together, through threadpoolctl. Note that this is process-wide: it
also governs NumPy's and SciPy's own BLAS calls.

Results are bit-for-bit reproducible run to run at a fixed thread count; OpenBLAS's last bits
can differ between thread counts (measured: up to 2e-7 in h, 1e-5 in dWx, float32).
"""

import operator

import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS numba calls, so it is found)
from threadpoolctl import ThreadpoolController

_controller = None


def _blas():
    global _controller
    if _controller is None:
        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def set_num_threads(n):
    """Use n threads (n >= 1) in every BLAS call, fastrnn's and everyone else's."""
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer >= 1, got {n!r}") from None
    if n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n}")
    _blas().limit(limits=n)


def get_num_threads():
    """The largest thread count among the loaded BLAS libraries."""
    return max(lib.num_threads for lib in _blas().lib_controllers)
