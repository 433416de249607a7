"""fastrnn's own GEMM (kernels/gemm.py through _core.matmul), held to NumPy in float64 on odd
shapes, transposed operands, pre-packed B, accumulation and empty dimensions; and the same
bits for 1 and 2 threads."""

import numpy as np
import pytest

from fastrnn._core import matmul, weight_panels
from numba import njit

from fastrnn.kernels.gemm import (columns_per_panel, in_place_kernel, padded_columns,
                                  step_product_kernel, times_transposed)

# (M, K, P): ones, primes, edges of every target's row tiles (4 or 6 rows) and column panels
# (8 to 64 columns, _isa.py), several k-blocks (512 float32, 256 float64 deep), row splits
# (M >= P) and column splits (M < P).
SHAPES = [(1, 1, 1), (7, 13, 70), (6, 256, 64), (100, 300, 129), (13, 700, 33),
          (5, 1100, 300), (257, 67, 31), (64, 520, 1000), (1, 33, 200)]
TOLERANCE = {np.float32: 2e-6, np.float64: 1e-13}


def operands(M, K, P, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((M, K)).astype(dtype),
            rng.standard_normal((K, P)).astype(dtype))


def assert_product(got, A, B, dtype, offset=0.0):
    want = A.astype(np.float64) @ B.astype(np.float64) + offset
    scale = np.sqrt(A.shape[1]) * max(1.0, np.abs(want).max() / np.sqrt(max(A.shape[1], 1)))
    err = np.abs(got - want).max() / scale if got.size else 0.0
    assert err < TOLERANCE[dtype], f"{A.shape} @ {B.shape} {dtype.__name__}: error {err:.1e}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_matches_numpy(shape, dtype, threads):
    M, K, P = shape
    A, B = operands(M, K, P, dtype)
    C = np.empty((M, P), dtype)
    matmul(A, B, C, threads)
    assert_product(C, A, B, dtype)
    # Transposed (Fortran-ordered) operands are packed rather than read in place.
    C2 = np.empty((M, P), dtype)
    matmul(np.asfortranarray(A), np.asfortranarray(B), C2, threads)
    np.testing.assert_array_equal(C2, C)
    # Accumulating into C, and B given pre-packed (the inference path).
    C3 = np.ones((M, P), dtype)
    matmul(A, B, C3, threads, accumulate=True)
    assert_product(C3, A, B, dtype, offset=1.0)
    C4 = np.empty((M, P), dtype)
    matmul(A, None, C4, threads, B_panels=weight_panels(B))
    np.testing.assert_array_equal(C4, C)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_same_bits_for_any_thread_count(dtype):
    for M, K, P in SHAPES:
        A, B = operands(M, K, P, dtype, seed=1)
        one, two = np.empty((M, P), dtype), np.empty((M, P), dtype)
        matmul(A, B, one, 1)
        matmul(A, B, two, 2)
        np.testing.assert_array_equal(one, two)


def test_matmul_empty_dimensions():
    A, B = operands(4, 0, 5, np.float32)
    C = np.full((4, 5), 3.0, np.float32)
    matmul(A, B, C, 2)
    assert not C.any()  # K = 0: the product is zero
    C[:] = 3.0
    matmul(A, B, C, 2, accumulate=True)
    assert (C == 3.0).all()
    matmul(np.empty((0, 3), np.float32), np.empty((3, 5), np.float32),
           np.empty((0, 5), np.float32), 2)


@njit
def _times_transposed(A, W, out):
    times_transposed(A, W, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 320, 1024), (3, 7, 37), (2, 13, 70),
                                   (5, 5, 3), (4, 9, 64)], ids=str)
def test_times_transposed_matches_numpy(shape, dtype):
    """A @ W.T by row dot products (the small steps' backward): row counts around DOT_ROWS,
    lengths around its vectors (tails of every length on every target)."""
    N, J, G = shape
    A, Wt = operands(N, G, J, dtype)
    W = np.ascontiguousarray(Wt.T)
    out = np.full((N, J), np.nan, dtype)
    _times_transposed(A, W, out)
    assert_product(out, A, Wt, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows_apart", [False, True])
def test_step_product_in_place_matches_packed_to_the_bit(dtype, rows_apart):
    """Reading W where it lies gives step_product's bits, for the whole width and for a
    column range that is not a whole number of panels or vectors, with one k-block and
    with several, for a tile of several rows and one holding a single row (M = 5), and
    for W's rows an odd width apart and 4 KB apart (where a single row's passes go
    deeper: _isa.ROW_STREAM_DEPTH)."""
    from fastrnn import _isa
    NR = columns_per_panel(dtype)
    for P in (2 * NR + NR // 2 + 1, 4096 // np.dtype(dtype).itemsize):
        for K in (37, 2 * _isa.KC_BYTES // np.dtype(dtype).itemsize + 5):
            for M in (3, 5):
                _check_in_place_against_packed(dtype, rows_apart, M, K, P)


def _check_in_place_against_packed(dtype, rows_apart, M, K, P):
    from fastrnn.kernels.gemm import padded_rows
    NR = columns_per_panel(dtype)
    A, W = operands(padded_rows(M), K, P, dtype)
    want = np.zeros((padded_rows(M), padded_columns(P, dtype)), dtype)
    _packed(A, weight_panels(W), want, M, rows_apart)
    for p_lo, p_hi in ((2, 5), (0, P), (1, NR + 3)):
        got = np.full((padded_rows(M), P), np.nan, dtype)
        in_place_kernel(A, W, got, M, rows_apart, p_lo, p_hi)
        np.testing.assert_array_equal(got[:M, p_lo:p_hi], want[:M, p_lo:p_hi])
    assert_product(got[:M, 1:NR + 3], A[:M], W[:, 1:NR + 3], dtype)


def _packed(A, panels, out, M, rows_apart):
    """step_product through the kernel the time loops call (gemm.step_product_kernel: the
    library's own compiled code, nothing compiled for the test)."""
    if rows_apart:  # as steps_product takes one step: each row by the one-row kernel
        for m in range(M):
            step_product_kernel(A[m:m + 1], panels, out[m:m + 1], 0, 1, 1, False)
    else:
        step_product_kernel(A, panels, out, 0, 1, M, False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (29, 256), (29, 1024), (29, 2048),
                                   (64, 37), (3, 130)], ids=str)
def test_transposed_packing_equals_packing_the_transpose(dtype, shape):
    """weight_panels(W, True) (kernels/gemm.pack_transposed_by_tiles) packs W.T as
    weight_panels of the copied transpose would, and as pack_panels' own transposing loop
    does: whole register tiles, rows 1, 4 and 8 KB apart, k's and columns left over from
    the tiles (fewer than a tile, and a panel's last columns), and the last panel's zero
    padding; nothing written past the panels."""
    from fastrnn.kernels.gemm import pack_panels, pack_transposed_by_tiles
    W = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    expected = weight_panels(np.ascontiguousarray(W.T))
    np.testing.assert_array_equal(weight_panels(W, True), expected)
    for pack in (pack_transposed_by_tiles, lambda W, out: pack_panels(W, True, out)):
        out = np.full(expected.shape[0] + 1, np.nan, dtype)
        pack(W, out[:-1])
        np.testing.assert_array_equal(out[:-1], expected)
        assert np.isnan(out[-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (8, 8), (16, 16), (17, 9), (65, 130),
                                   (130, 65), (2048, 24), (7, 64)], ids=str)
def test_transpose_into_equals_numpy_transpose(shape, dtype):
    """kernels/transpose.transpose_into copies W[rows].T exactly (every element moved, none
    computed): whole register tiles of the target's vector width (4 to 16 elements a side),
    many tiles a side, edges of every width below a tile's in rows and columns; rows in order, the LSTM's gate blocks swapped as fastrnn.torch does it (tiles
    of consecutive rows, and tiles that straddle the blocks), rows reversed (no tile takes
    the registers) and a gather of fewer rows than W has; nothing written outside out."""
    from fastrnn.kernels.transpose import transpose_into
    R, K = shape
    W = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    H = R // 4
    orders = [np.arange(R), np.r_[0:2 * H, 3 * H:4 * H, 2 * H:3 * H, 4 * H:R],
              np.arange(R)[::-1].copy(), np.arange(0, R, 2)]
    for rows in orders:
        rows = rows.astype(np.int64)
        out = np.full((K + 1, len(rows)), np.nan, dtype)  # one row past out's end
        transpose_into(W, rows, out[:K])
        np.testing.assert_array_equal(out[:K], W[rows].T)
        assert np.isnan(out[K]).all()
