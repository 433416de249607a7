"""Copies of per-step rows into the training cache, with non-temporal stores when the
cache is too big for the caches.

The LSTM's training forward writes D + 6H values per row and step for the backward (x_t,
the activated gates, c_t, h_t). An ordinary store first reads the line it writes
(read-for-ownership), so those writes cost twice their size in memory traffic. A
non-temporal store writes a whole 64-byte line without reading it and without evicting
what the time loop keeps in cache, so at large shapes such as (100, 64, 256, 256) float32
the loop's writes take much less time than with ordinary stores.

Stored this way, the rows are not in cache afterwards, which is the wrong trade when they
would fit: the API chooses per call (see _isa.STREAM_MIN_BYTES). Values are the same
either way.
"""

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .._config import JIT_OPTIONS, setup_kernels

LINE_BYTES = 64


@intrinsic
def store_line_nontemporal(typingctx, dst, dst_off, src, src_off):
    """The 64 bytes at src's element src_off (any alignment) stored to dst's element
    dst_off, which must be 64-byte aligned, by a non-temporal store. dst, src: C-contiguous
    arrays of one float dtype, offsets in elements from their first element."""
    sig = types.void(dst, types.intp, src, types.intp)

    def codegen(context, builder, signature, args):
        dst_, dst_off_, src_, src_off_ = args
        dtype = signature.args[0].dtype
        vec = ir.VectorType(context.get_value_type(dtype), LINE_BYTES * 8 // dtype.bitwidth)

        def address(index, value, offset):
            data = context.make_array(signature.args[index])(context, builder, value).data
            return builder.bitcast(builder.gep(data, [offset]), vec.as_pointer())

        line = builder.load(address(2, src_, src_off_), align=dtype.bitwidth // 8)
        store = builder.store(line, address(0, dst_, dst_off_), align=LINE_BYTES)
        store.set_metadata("nontemporal",
                           builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def store_fence(typingctx):
    """A full memory fence (mfence on x86): the non-temporal stores before it, which are
    weakly ordered, are visible to every core before anything after it."""
    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@njit(inline="always", **JIT_OPTIONS)
def copy_row(dst, src, stream):
    """dst[:] = src[:] for 1-D C-contiguous rows of one dtype; with ``stream``, the whole
    64-byte lines of dst are stored non-temporally (call store_fence after the last)."""
    n = src.shape[0]
    if not stream:
        for i in range(n):
            dst[i] = src[i]
        return
    size = dst.itemsize
    lanes = LINE_BYTES // size
    head = min(n, (LINE_BYTES - dst.ctypes.data % LINE_BYTES) % LINE_BYTES // size)
    for i in range(head):
        dst[i] = src[i]
    i = head
    while i + lanes <= n:
        store_line_nontemporal(dst, i, src, i)
        i += lanes
    for j in range(i, n):
        dst[j] = src[j]


@njit(inline="always", **JIT_OPTIONS)
def copy_rows(dst, src):
    """dst[:m, :n] = src for a 2-D src of shape (m, n), row by row (copy_row). Kernels copy
    arrays into arrays with these loops, never with slice assignment: numba's checks the
    shapes and formats its error message with numba's string functions, whose compilation
    cost the first kernel of a process ~5 s."""
    for i in range(src.shape[0]):
        copy_row(dst[i], src[i], False)


setup_kernels(globals())  # every kernel above: see _config.py
