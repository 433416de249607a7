"""Transposed copies of matrices (their rows gathered on the way), L x L elements at a time
in vector registers.

fastrnn.torch converts torch's (G, K) weights to fastrnn's (K, G) and some gradients back
on every call. NumPy's copy of a transposed view reads one element per cache line per
output row, and with rows kilobytes apart the lines are gone before the next output row
comes back for them: 0.9-1 GB/s on 4 MB float32 weights on Zen 3, against 25 GB/s for a
plain copy (docs/performance.md), so that a module's inference at H = 512 spent most of
its time there. Here a tile of L rows of L elements (L: one vector of the target,
_isa.VECTOR_BYTES) is loaded as L vectors, transposed in registers by log2(L) rounds of
interleaving their halves, and stored as L vectors: every line read and written whole.
"""

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, register_jitable

from .._config import JIT_OPTIONS, setup_kernels
from .._isa import VECTOR_BYTES


@register_jitable
def tile_lanes(itemsize):
    """L, the side of a register tile: the elements of ``itemsize`` bytes in one vector."""
    return VECTOR_BYTES // itemsize


def _interleave_masks(lanes):
    """Shuffle masks taking two vectors a, b to [a0, b0, a1, b1, ...] over their first
    halves and over their second halves."""
    half = lanes // 2
    low = [i // 2 + (lanes if i % 2 else 0) for i in range(lanes)]
    high = [half + i // 2 + (lanes if i % 2 else 0) for i in range(lanes)]
    return low, high


@intrinsic
def transpose_tile(typingctx, src, src_off, src_rs, dst, dst_off, dst_rs):
    """dst[dst_off + k * dst_rs + p] = src[src_off + p * src_rs + k] for p, k < L: one L x L
    tile transposed. src, dst: C-contiguous arrays of one float dtype; offsets and row
    strides in elements from each array's first element (any alignment).

    Rows v_0 .. v_{L-1} become the columns by log2(L) rounds, each taking the pairs
    (v_i, v_{i + L/2}) to the interleavings of their first and of their second halves,
    in order (each element moves; none is computed, so the bits are the source's)."""
    sig = types.void(src, types.intp, types.intp, dst, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        src_, src_off_, src_rs_, dst_, dst_off_, dst_rs_ = args
        dtype = signature.args[0].dtype
        lanes = tile_lanes(dtype.bitwidth // 8)
        vec = ir.VectorType(context.get_value_type(dtype), lanes)
        intp = ir.IntType(64)

        def row_pointer(index, value, offset, stride, row):
            data = context.make_array(signature.args[index])(context, builder, value).data
            at = builder.add(offset, builder.mul(stride, ir.Constant(intp, row)))
            return builder.bitcast(builder.gep(data, [at]), vec.as_pointer())

        rows = [builder.load(row_pointer(0, src_, src_off_, src_rs_, r), align=1)
                for r in range(lanes)]
        low, high = (ir.Constant(ir.VectorType(ir.IntType(32), lanes), mask)
                     for mask in _interleave_masks(lanes))
        half = lanes // 2
        for _ in range(lanes.bit_length() - 1):  # log2(lanes) rounds
            mixed = []
            for i in range(half):
                a, b = rows[i], rows[i + half]
                mixed += [builder.shuffle_vector(a, b, low), builder.shuffle_vector(a, b, high)]
            rows = mixed
        for k in range(lanes):
            builder.store(rows[k], row_pointer(3, dst_, dst_off_, dst_rs_, k), align=1)
        return context.get_dummy_value()

    return sig, codegen


@njit(**JIT_OPTIONS)
def transpose_into(W, rows, out):
    """out[k, p] = W[rows[p], k]: rows of W (R, K) gathered and transposed in one pass (the
    LSTM's gate blocks reordered as they are transposed), out (K, P), P = len(rows);
    C-contiguous, one float dtype; rows (P,) int64, each < R. Whole L x L tiles in
    registers (transpose_tile) where a tile's L source rows are consecutive rows of W;
    other tiles and the edges element by element. (Taking the tiles in blocks of 32-128
    elements a side, to keep a block's lines in L1, measured 0.94-1.27x the time of this
    plain order on Zen 3: no gain.)"""
    K = W.shape[1]
    P = rows.shape[0]
    L = tile_lanes(W.itemsize)
    P_tiles = P - P % L
    K_tiles = K - K % L
    for p0 in range(0, P_tiles, L):
        first = rows[p0]
        consecutive = True
        for i in range(1, L):
            if rows[p0 + i] != first + i:
                consecutive = False
        for k0 in range(0, K_tiles, L):
            if consecutive:
                transpose_tile(W, first * K + k0, K, out, k0 * P + p0, P)
            else:
                for p in range(p0, p0 + L):
                    for k in range(k0, k0 + L):
                        out[k, p] = W[rows[p], k]
    for k in range(K_tiles, K):
        for p in range(P_tiles):
            out[k, p] = W[rows[p], k]
    for p in range(P_tiles, P):
        for k in range(K):
            out[k, p] = W[rows[p], k]


setup_kernels(globals())
