"""fastrnn's own matrix products: a register-blocked micro-kernel written in LLVM IR, the
packing around it, a GEMM split over numba's threads, and the per-step product of the time
loops.

Why not BLAS: numba's ``np.dot`` calls SciPy's OpenBLAS, whose last bits change with its
thread count, and whose pool fights numba's for two cores. The micro-kernel below keeps an
MR x NR block of C in vector registers and streams packed A and B through it; its shape
comes from the target's configuration (_isa.py: 6 x 64 float32 in 24 AVX-512 registers,
4 x 24 in 12 AVX2 registers, ...). Each element of C is summed in the same order whatever
the thread count, so results are bit-identical for 1 or 2 threads.

Packed layouts (NR = panel_width: VECTORS vectors of VECTOR_BYTES, e.g. 64 float32 or 32
float64 columns on AVX-512):
  A tile:  MR rows x kc, stored k-major: Ap[k * MR + r]
  B panel: kc x NR columns, stored k-major: Bp[k * NR + q]
Rows or columns past the matrix edge are packed as zeros.

The micro-kernel loads A through strides (a row stride and a k stride), so it can also read
unpacked rows (the per-step hidden state) directly.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from .._config import JIT_OPTIONS, setup_kernels
from .._isa import (FMA, KC_BYTES, MR, MR_STEP, ROW_STREAM_DEPTH, STEP_STREAM_DEPTH,
                    VECTOR_BYTES, VECTORS)
from ._math import emit_multiply_add, zero_of
from .address import caller
from .transpose import tile_lanes, transpose_tile

ROW_TILES_PER_JOB = 16  # MR-row tiles of A packed per k-block and job (kept in L2)
# Independent sums per element in the one-row kernel: a single row has only VECTORS
# dependency chains, so each k would wait for the previous FMA (latency-bound). ROW_WAYS
# sets take consecutive k's and are summed in a fixed order after the k loop.
ROW_WAYS = 4


def columns_per_panel(dtype):
    """NR: columns per packed B panel (VECTORS vectors of VECTOR_BYTES) for ``dtype``."""
    return VECTORS * VECTOR_BYTES // np.dtype(dtype).itemsize


def panel_width(arr):
    """NR for arr's dtype, usable inside kernels (a compile-time constant there)."""
    return columns_per_panel(arr.dtype)


def k_block(arr):
    """KC: depth of one k-block of the big GEMM for arr's dtype (compile-time constant):
    KC_BYTES per row, e.g. 512 float32 / 256 float64."""
    return KC_BYTES // arr.dtype.itemsize


def _constant_per_dtype(python_impl):
    def typer(arr):
        value = python_impl(np.empty(0, np.dtype(str(arr.dtype))))
        return lambda arr: value
    return typer


overload(panel_width)(_constant_per_dtype(panel_width))
overload(k_block)(_constant_per_dtype(k_block))


def _kernel_function(module, kind, scalar, lanes, arguments):
    """(function, new): the module's void function fastrnn_{kind}_{lanes}{f32|f64}_{fma|muladd}
    of the given argument types, the one already made there (new False), or a new one,
    linkonce_odr and noinline, for the caller to fill (new True): the tile and the dot
    kernel are defined once per module."""
    suffix = "f32" if isinstance(scalar, ir.FloatType) else "f64"
    name = f"fastrnn_{kind}_{lanes}{suffix}_{'fma' if FMA else 'muladd'}"
    if name in module.globals:
        return module.globals[name], False
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), arguments), name)
    function.linkage = "linkonce_odr"
    function.attributes.add("noinline")
    return function, True


def _splat(builder, value, vec):
    """The scalar ``value`` in every lane of a vector of type ``vec``."""
    undefined = ir.Constant(vec, ir.Undefined)
    first = builder.insert_element(undefined, value, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count)
    return builder.shuffle_vector(first, undefined, mask)


def _tile_function(module, MR, scalar, lanes):
    """The LLVM function computing one MR x NR tile, defined once per module, noinline:
    inlined at every call site, the unrolled loop made LLVM spend seconds per kernel.

    void tile(A*, a_rs, a_ks, B*, ldb, C*, ldc, kc, accumulate):
    C[r * ldc + q] (+)= sum_k A[r * a_rs + k * a_ks] * B[k * ldb + q], r < MR, q < NR, k < kc.
    """
    intp = ir.IntType(64)
    pointer = scalar.as_pointer()
    function, new = _kernel_function(module, f"tile_{MR}x{VECTORS}", scalar, lanes, [
        pointer, intp, intp, pointer, intp, pointer, intp, intp, ir.IntType(1)])
    if not new:
        return function
    a_base, a_rs, a_ks, b_base, ldb, c_base, ldc, kc, accumulate = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    vec = ir.VectorType(scalar, lanes)

    def const(value):
        return ir.Constant(intp, value)

    zero = ir.Constant(vec, None)

    def multiply_add(k, acc):
        """acc[r * VECTORS + v] + A[r, k] * B[k, v-th vector], for one k."""
        b_row = builder.gep(b_base, [builder.mul(k, ldb)])
        b_vecs = [builder.load(builder.bitcast(builder.gep(b_row, [const(v * lanes)]),
                                               vec.as_pointer()), align=4)
                  for v in range(VECTORS)]
        a_col = builder.gep(a_base, [builder.mul(k, a_ks)])
        out = []
        for r in range(MR):
            a = builder.load(builder.gep(a_col, [builder.mul(const(r), a_rs)]))
            a_vec = _splat(builder, a, vec)
            for v in range(VECTORS):
                out.append(emit_multiply_add(builder, a_vec, b_vecs[v],
                                             acc[r * VECTORS + v]))
        return out

    def phis(incoming):
        """One phi per value, all created before anything else in the block."""
        made = []
        for values in zip(*(values for values, _ in incoming)):
            phi = builder.phi(vec)
            for value, (_, block) in zip(values, incoming):
                phi.add_incoming(value, block)
            made.append(phi)
        return made

    def open_loop(start, predecessor, initial):
        """At the top of a loop block: the k counter from ``start`` and one accumulator
        phi per initial value, both entered from ``predecessor``."""
        counter = builder.phi(intp)
        counter.add_incoming(start, predecessor)
        return counter, phis([(initial, predecessor)])

    def close_loop(counter, step, limit, acc, updated, loop, exit_block):
        """At the bottom: feed counter + step and the updated accumulators back, and loop
        while the counter stays below ``limit``. Returns the block the loop ends in."""
        counter_next = builder.add(counter, const(step))
        end = builder.basic_block
        counter.add_incoming(counter_next, end)
        for phi, value in zip(acc, updated):
            phi.add_incoming(value, end)
        builder.cbranch(builder.icmp_signed("<", counter_next, limit), loop, exit_block)
        return end

    ways = ROW_WAYS if MR == 1 else 1
    size = MR * VECTORS
    entry = builder.basic_block
    main = builder.append_basic_block("main")
    middle = builder.append_basic_block("middle")
    tail = builder.append_basic_block("tail")
    done = builder.append_basic_block("done")
    kc_main = builder.sub(kc, builder.srem(kc, const(ways)))
    builder.cbranch(builder.icmp_signed(">", kc_main, const(0)), main, middle)

    builder.position_at_end(main)
    k, acc = open_loop(const(0), entry, [zero] * (ways * size))
    updated = []
    for w in range(ways):
        updated += multiply_add(builder.add(k, const(w)), acc[w * size:(w + 1) * size])
    main_end = close_loop(k, ways, kc_main, acc, updated, main, middle)

    builder.position_at_end(middle)
    sets = phis([([zero] * (ways * size), entry), (updated, main_end)])
    total = sets[:size]
    for w in range(1, ways):
        total = [builder.fadd(t, x) for t, x in zip(total, sets[w * size:(w + 1) * size])]
    builder.cbranch(builder.icmp_signed("<", kc_main, kc), tail, done)

    builder.position_at_end(tail)
    k_tail, acc_tail = open_loop(kc_main, middle, total)
    updated_tail = multiply_add(k_tail, acc_tail)
    tail_end = close_loop(k_tail, 1, kc, acc_tail, updated_tail, tail, done)

    builder.position_at_end(done)
    totals = phis([(total, middle), (updated_tail, tail_end)])
    for r in range(MR):
        c_row = builder.gep(c_base, [builder.mul(const(r), ldc)])
        for v in range(VECTORS):
            target = builder.bitcast(builder.gep(c_row, [const(v * lanes)]), vec.as_pointer())
            old = builder.select(accumulate, builder.load(target, align=4), zero)
            builder.store(builder.fadd(old, totals[r * VECTORS + v]), target, align=4)
    builder.ret_void()
    return function


def _make_micro_kernel(MR):
    """The micro-kernel for MR rows of C: an intrinsic calling _tile_function."""
    @intrinsic
    def micro_kernel(typingctx, A, a_off, a_rs, a_ks, B, b_off, ldb, C, c_off, ldc, kc,
                     accumulate):
        """C[c_off + r * ldc + q] (+)= sum_k A[a_off + r * a_rs + k * a_ks] * B[b_off + k * ldb + q]
        for r < MR, q < NR, k < kc; offsets and strides in elements from each array's first
        element (C-contiguous arrays of any ndim).

        The MR x NR block of C lives in MR * VECTORS vector registers (loop-carried phis)
        for the whole k loop; each k loads VECTORS vectors of B, broadcasts MR scalars of A and
        issues MR * VECTORS fused multiply-adds, in a fixed order.
        """
        sig = types.void(A, types.intp, types.intp, types.intp, B, types.intp, types.intp, C,
                         types.intp, types.intp, types.intp, types.boolean)

        def codegen(context, builder, signature, args):
            A_, a_off_, a_rs_, a_ks_, B_, b_off_, ldb_, C_, c_off_, ldc_, kc_, accumulate_ = args
            dtype = signature.args[0].dtype
            lanes = VECTOR_BYTES // (4 if dtype == types.float32 else 8)

            def data(index, value):
                return context.make_array(signature.args[index])(context, builder, value).data

            tile = _tile_function(builder.module, MR, context.get_value_type(dtype), lanes)
            builder.call(tile, [builder.gep(data(0, A_), [a_off_]), a_rs_, a_ks_,
                                builder.gep(data(4, B_), [b_off_]), ldb_,
                                builder.gep(data(7, C_), [c_off_]), ldc_, kc_,
                                builder.trunc(accumulate_, ir.IntType(1))])
            return context.get_dummy_value()

        return sig, codegen
    return micro_kernel


DOT_ROWS = 4  # rows of A per dot_kernel call: each load of x serves this many rows
DOT_VECTORS = 2  # vectors per row and step: independent sums per row, over the FMA latency


def _dot_function(module, rows, scalar, lanes):
    """The LLVM function for ``rows`` dot products with one vector, noinline (as the tile):

    void dots(A*, lda, x*, n, out*):  out[r] = sum_g A[r * lda + g] * x[g], r < rows, g < n.

    Each row's sum runs in DOT_VECTORS vectors of partial sums over g in steps of
    DOT_VECTORS * lanes, then adds them, reduces the lanes in order and takes the last
    n mod (DOT_VECTORS * lanes) terms one by one: a fixed order, whatever calls it.
    """
    intp = ir.IntType(64)
    pointer = scalar.as_pointer()
    function, new = _kernel_function(module, f"dots_{rows}x{DOT_VECTORS}", scalar, lanes,
                                     [pointer, intp, pointer, intp, pointer])
    if not new:
        return function
    a_base, lda, x_base, n, out = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    vec = ir.VectorType(scalar, lanes)
    step = DOT_VECTORS * lanes
    zero = ir.Constant(vec, None)
    entry = builder.basic_block
    main = builder.append_basic_block("main")
    reduce = builder.append_basic_block("reduce")
    tail = builder.append_basic_block("tail")
    done = builder.append_basic_block("done")
    n_main = builder.sub(n, builder.srem(n, ir.Constant(intp, step)))
    row_bases = [builder.gep(a_base, [builder.mul(ir.Constant(intp, r), lda)])
                 for r in range(rows)]
    builder.cbranch(builder.icmp_signed(">", n_main, ir.Constant(intp, 0)), main, reduce)

    def load_vec(base, index):
        return builder.load(builder.bitcast(builder.gep(base, [index]), vec.as_pointer()),
                            align=4)

    builder.position_at_end(main)
    g = builder.phi(intp)
    g.add_incoming(ir.Constant(intp, 0), entry)
    acc = [builder.phi(vec) for _ in range(rows * DOT_VECTORS)]
    for phi in acc:
        phi.add_incoming(zero, entry)
    x_vecs = [load_vec(x_base, builder.add(g, ir.Constant(intp, v * lanes)))
              for v in range(DOT_VECTORS)]
    updated = []
    for r in range(rows):
        for v in range(DOT_VECTORS):
            a = load_vec(row_bases[r], builder.add(g, ir.Constant(intp, v * lanes)))
            updated.append(emit_multiply_add(builder, a, x_vecs[v], acc[r * DOT_VECTORS + v]))
    g_next = builder.add(g, ir.Constant(intp, step))
    g.add_incoming(g_next, main)
    for phi, value in zip(acc, updated):
        phi.add_incoming(value, main)
    builder.cbranch(builder.icmp_signed("<", g_next, n_main), main, reduce)

    builder.position_at_end(reduce)
    partial = []  # every phi first: LLVM requires them at the top of the block
    for value in updated:
        phi = builder.phi(vec)
        phi.add_incoming(zero, entry)
        phi.add_incoming(value, main)
        partial.append(phi)
    totals = []
    for r in range(rows):
        parts = partial[r * DOT_VECTORS:(r + 1) * DOT_VECTORS]
        total = parts[0]
        for part in parts[1:]:
            total = builder.fadd(total, part)
        s = builder.extract_element(total, ir.Constant(ir.IntType(32), 0))
        for lane in range(1, lanes):
            s = builder.fadd(s, builder.extract_element(total, ir.Constant(ir.IntType(32), lane)))
        totals.append(s)
    builder.cbranch(builder.icmp_signed("<", n_main, n), tail, done)

    builder.position_at_end(tail)
    k = builder.phi(intp)
    k.add_incoming(n_main, reduce)
    tail_acc = [builder.phi(scalar) for _ in range(rows)]
    for phi, total in zip(tail_acc, totals):
        phi.add_incoming(total, reduce)
    x_k = builder.load(builder.gep(x_base, [k]))
    tail_updated = [emit_multiply_add(builder, builder.load(builder.gep(row_bases[r], [k])), x_k,
                                      tail_acc[r]) for r in range(rows)]
    k_next = builder.add(k, ir.Constant(intp, 1))
    k.add_incoming(k_next, tail)
    for phi, value in zip(tail_acc, tail_updated):
        phi.add_incoming(value, tail)
    builder.cbranch(builder.icmp_signed("<", k_next, n), tail, done)

    builder.position_at_end(done)
    results = []
    for r in range(rows):
        result = builder.phi(scalar)
        result.add_incoming(totals[r], reduce)
        result.add_incoming(tail_updated[r], tail)
        results.append(result)
    for r, result in enumerate(results):
        builder.store(result, builder.gep(out, [ir.Constant(intp, r)]))
    builder.ret_void()
    return function


def _make_dot_kernel(rows):
    """dot_kernel(A, a_off, lda, x, x_off, n, out, out_off): out[out_off + r] = sum_g
    A[a_off + r * lda + g] * x[x_off + g] for r < rows, g < n (offsets in elements from
    each C-contiguous array's first element), by _dot_function."""
    @intrinsic
    def dot_kernel(typingctx, A, a_off, lda, x, x_off, n, out, out_off):
        sig = types.void(A, types.intp, types.intp, x, types.intp, types.intp, out, types.intp)

        def codegen(context, builder, signature, args):
            A_, a_off_, lda_, x_, x_off_, n_, out_, out_off_ = args
            dtype = signature.args[0].dtype
            lanes = VECTOR_BYTES // (4 if dtype == types.float32 else 8)

            def data(index, value):
                return context.make_array(signature.args[index])(context, builder, value).data

            dots = _dot_function(builder.module, rows, context.get_value_type(dtype), lanes)
            builder.call(dots, [builder.gep(data(0, A_), [a_off_]), lda_,
                                builder.gep(data(3, x_), [x_off_]), n_,
                                builder.gep(data(6, out_), [out_off_])])
            return context.get_dummy_value()

        return sig, codegen
    return dot_kernel


dot_rows_kernel = _make_dot_kernel(DOT_ROWS)
dot_row_kernel = _make_dot_kernel(1)


@njit(inline="always", **JIT_OPTIONS)
def times_transposed(A, W, out):
    """out[n, j] = sum_g A[n, g] W[j, g] for n < A.shape[0], j < W.shape[0]: A @ W.T reading W
    (J, G), C-contiguous, where it lies (row by row dot products, DOT_ROWS rows of W per
    call sharing the loads of A's row). For a few rows of A, such as a single step's
    gradient, where packing W.T would copy more than the product reads."""
    J, G = W.shape
    for n in range(A.shape[0]):
        j = 0
        while j + DOT_ROWS <= J:
            dot_rows_kernel(W, j * G, G, A, n * G, G, out, n * J + j)
            j += DOT_ROWS
        for j in range(j, J):
            dot_row_kernel(W, j * G, G, A, n * G, G, out, n * J + j)


# k's per pass of the streaming kernels onto each partial sum: each pass loads and stores
# the sums once (L1) for this many FMAs per chain, and holds rows x ways x depth broadcast
# values of A in registers. The MR_STEP-row kernel takes _isa.STEP_STREAM_DEPTH, the
# one-row kernel _isa.ROW_STREAM_DEPTH where W's rows lie DEEP_ROW_BYTES or more apart and
# SHALLOW_DEPTH where they are closer.
SHALLOW_DEPTH = 2
DEEP_ROW_BYTES = 3072
SUMS_SKEW = 16  # elements between the end of one chain's sums and the next one's start


def _counted_loop(builder, start, stop, step, body):
    """Emit ``for i in range(start, stop, step): body(i)`` (i64 values; step > 0)."""
    intp = ir.IntType(64)
    before = builder.basic_block
    head = builder.append_basic_block("head")
    inside = builder.append_basic_block("body")
    after = builder.append_basic_block("after")
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(intp)
    i.add_incoming(start, before)
    builder.cbranch(builder.icmp_signed("<", i, stop), inside, after)
    builder.position_at_end(inside)
    body(i)
    i.add_incoming(builder.add(i, ir.Constant(intp, step)), builder.basic_block)
    builder.branch(head)
    builder.position_at_end(after)


def _stream_function(module, rows, ways, depth, scalar, lanes):
    """The LLVM function of a per-step product reading W row by row, noinline:

    void stream(A*, a_rs, W*, ldw, kc, n, S*, C*, ldc, accumulate):
    C[r * ldc + q] (+)= sum_k A[r * a_rs + k] * W[k * ldw + q], r < rows, q < n, k < kc,

    summed as the rows x NR micro-kernel sums (_tile_function): ``ways`` interleaved sums per
    element over k = w, w + ways, ... (the first kc - kc % ways k's), added in order, then
    the last k's one by one, then added onto C (or onto 0). The sums live in S, rows x ways
    chains of n elements (SUMS_SKEW apart) of scratch, rather than in registers, so that W
    is read along its rows, ``depth`` rows per way and pass over all n columns
    (vectors, then single columns), instead of one register block of columns down all kc
    rows. The depth changes which loads meet in a pass, not the sums' order: the same bits
    for any depth.
    """
    intp = ir.IntType(64)
    pointer = scalar.as_pointer()
    # The depth in the name too: functions of one name are one function to the JIT's
    # linker (linkonce_odr), so a kernel cached with another depth must not share it.
    function, new = _kernel_function(module, f"stream_{rows}x{ways}d{depth}", scalar, lanes, [
        pointer, intp, pointer, intp, intp, intp, pointer, pointer, intp, ir.IntType(1)])
    if not new:
        return function
    # Small code rather than unrolled: the loops are bound by the loads of W, and O3's
    # unrolling of its dozens of loops cost the kernels that call it 0.4 s of compile.
    function.attributes.add("optsize")
    a_base, a_rs, w_base, ldw, kc, n, s_base, c_base, ldc, accumulate = function.args
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    vec = ir.VectorType(scalar, lanes)

    def const(value):
        return ir.Constant(intp, value)

    def element(base, index):
        return builder.gep(base, [index])

    def load(ty, base, index):
        address = element(base, index)
        if ty is vec:
            return builder.load(builder.bitcast(address, vec.as_pointer()), align=4)
        return builder.load(address)

    def store(value, base, index):
        address = element(base, index)
        if isinstance(value.type, ir.VectorType):
            address = builder.bitcast(address, vec.as_pointer())
            builder.store(value, address, align=4)
        else:
            builder.store(value, address)

    def broadcast(ty, value):
        if ty is not vec:
            return value
        return _splat(builder, value, vec)

    # The sums of one chain lie n + SUMS_SKEW apart: n apart, at 4H = 1024 float32 columns
    # they would share cache sets as W's rows do.
    sums_stride = builder.add(n, const(SUMS_SKEW))

    def chain(r, w):
        return builder.mul(const(r * ways + w), sums_stride)

    n_vec = builder.sub(n, builder.srem(n, const(lanes)))

    def columns(body):
        """body(q, ty) over q < n: vectors of lanes columns, then one column at a time."""
        _counted_loop(builder, const(0), n_vec, lanes, lambda q: body(q, vec))
        _counted_loop(builder, n_vec, n, 1, lambda q: body(q, scalar))

    def zero_sums(q, ty):
        for r in range(rows):
            for w in range(ways):
                store(ir.Constant(ty, None), s_base, builder.add(chain(r, w), q))

    columns(zero_sums)

    def passes(k_start, k_stop, depth):
        """The passes over k_start..k_stop (a multiple of ways * depth apart)."""
        def one_pass(k):
            a = [[[load(scalar, a_base, builder.add(builder.mul(const(r), a_rs),
                                                     builder.add(k, const(i * ways + w))))
                   for i in range(depth)] for w in range(ways)] for r in range(rows)]
            w_rows = [[element(w_base, builder.mul(builder.add(k, const(i * ways + w)), ldw))
                       for i in range(depth)] for w in range(ways)]

            # One sweep of the columns per way: a sweep reading every way's rows of W
            # would read 8 rows 4 KB apart at once, more than L1 has ways for one set.
            for w in range(ways):
                def update(q, ty, w=w):
                    b = [load(ty, w_rows[w][i], q) for i in range(depth)]
                    for r in range(rows):
                        index = builder.add(chain(r, w), q)
                        total = load(ty, s_base, index)
                        for i in range(depth):
                            total = emit_multiply_add(builder, broadcast(ty, a[r][w][i]),
                                                      b[i], total)
                        store(total, s_base, index)
                columns(update)
        _counted_loop(builder, k_start, k_stop, ways * depth, one_pass)

    kc_main = builder.sub(kc, builder.srem(kc, const(ways)))
    k_deep = builder.sub(kc_main, builder.srem(kc_main, const(ways * depth)))
    passes(const(0), k_deep, depth)
    passes(k_deep, kc_main, 1)

    def finish(q, ty):
        for r in range(rows):
            index = builder.add(chain(r, 0), q)
            total = load(ty, s_base, index)
            for w in range(1, ways):
                total = builder.fadd(total, load(ty, s_base, builder.add(chain(r, w), q)))
            store(total, s_base, index)
    if ways > 1:
        columns(finish)

    def tail_k(k):  # the last kc % ways k's, onto the added sums (rows == 1 when ways > 1)
        a = [load(scalar, a_base, builder.add(builder.mul(const(r), a_rs), k))
             for r in range(rows)]
        w_row = element(w_base, builder.mul(k, ldw))

        def update(q, ty):
            b = load(ty, w_row, q)
            for r in range(rows):
                index = builder.add(chain(r, 0), q)
                store(emit_multiply_add(builder, broadcast(ty, a[r]), b,
                                        load(ty, s_base, index)), s_base, index)
        columns(update)
    _counted_loop(builder, kc_main, kc, 1, tail_k)

    def store_c(q, ty):
        for r in range(rows):
            index = builder.add(builder.mul(const(r), ldc), q)
            old = builder.select(accumulate, load(ty, c_base, index), ir.Constant(ty, None))
            store(builder.fadd(old, load(ty, s_base, builder.add(chain(r, 0), q))), c_base,
                  index)
    columns(store_c)
    builder.ret_void()
    return function


def _make_stream_kernel(rows, ways):
    """stream_kernel(A, a_off, a_rs, W, w_off, ldw, kc, n, S, C, c_off, ldc, accumulate):
    _stream_function's product on C-contiguous arrays, offsets in elements from each
    array's first element; S: scratch of >= rows * ways * (n + SUMS_SKEW) elements."""
    @intrinsic
    def stream_kernel(typingctx, A, a_off, a_rs, W, w_off, ldw, kc, n, S, C, c_off, ldc,
                      accumulate):
        sig = types.void(A, types.intp, types.intp, W, types.intp, types.intp, types.intp,
                         types.intp, S, C, types.intp, types.intp, types.boolean)

        def codegen(context, builder, signature, args):
            (A_, a_off_, a_rs_, W_, w_off_, ldw_, kc_, n_, S_, C_, c_off_, ldc_,
             accumulate_) = args
            dtype = signature.args[0].dtype
            lanes = VECTOR_BYTES // (4 if dtype == types.float32 else 8)

            def data(index, value):
                return context.make_array(signature.args[index])(context, builder, value).data

            scalar = context.get_value_type(dtype)
            arguments = [builder.gep(data(0, A_), [a_off_]), a_rs_,
                         builder.gep(data(3, W_), [w_off_]), ldw_, kc_, n_, data(8, S_),
                         builder.gep(data(9, C_), [c_off_]), ldc_,
                         builder.trunc(accumulate_, ir.IntType(1))]
            if rows > 1 or ROW_STREAM_DEPTH == SHALLOW_DEPTH:
                depth = STEP_STREAM_DEPTH if rows > 1 else SHALLOW_DEPTH
                builder.call(_stream_function(builder.module, rows, ways, depth, scalar, lanes),
                             arguments)
                return context.get_dummy_value()
            shallow = _stream_function(builder.module, rows, ways, SHALLOW_DEPTH, scalar, lanes)
            # One row: deeper passes where W's rows lie DEEP_ROW_BYTES or more apart (the
            # LSTM's 4H = 1024 and the GRU's 3H = 768 float32 columns); closer rows (1 KB:
            # 320 x 256 ran 0.75x as fast deeper) keep the shallow passes.
            deep = _stream_function(builder.module, rows, ways, ROW_STREAM_DEPTH, scalar,
                                    lanes)
            row_bytes = builder.mul(ldw_, ir.Constant(ldw_.type, dtype.bitwidth // 8))
            far_apart = builder.icmp_signed(">=", row_bytes,
                                            ir.Constant(ldw_.type, DEEP_ROW_BYTES))
            with builder.if_else(far_apart) as (then, otherwise):
                with then:
                    builder.call(deep, arguments)
                with otherwise:
                    builder.call(shallow, arguments)
            return context.get_dummy_value()

        return sig, codegen
    return stream_kernel


micro_kernel = _make_micro_kernel(MR)         # the big GEMM's tiles
step_kernel = _make_micro_kernel(MR_STEP)     # the per-step products' tiles
row_kernel = _make_micro_kernel(1)  # a per-step tile holding one real row (N = 1)
step_stream_kernel = _make_stream_kernel(MR_STEP, 1)  # step_kernel's sums, W read by rows
row_stream_kernel = _make_stream_kernel(1, ROW_WAYS)  # row_kernel's


@njit(inline="always", **JIT_OPTIONS)
def pack_b_panel(B, k0, kc, p0, p_end, panel):
    """panel[k * NR + q] = B[k0 + k, p0 + q] for k < kc, q < NR; zero from column p_end.
    B: (K, P) any strides; panel: (>= kc * NR,)"""
    NR = panel_width(panel)
    width = min(NR, p_end - p0)
    zero = zero_of(panel)
    if width == NR:  # a whole panel: fixed-length rows that LLVM copies with vector moves
        for k in range(kc):
            for q in range(NR):
                panel[k * NR + q] = B[k0 + k, p0 + q]
        return
    for k in range(kc):
        for q in range(width):
            panel[k * NR + q] = B[k0 + k, p0 + q]
        for q in range(width, NR):
            panel[k * NR + q] = zero


@njit(inline="always", **JIT_OPTIONS)
def pack_a_tile(A, a_transposed, m0, m_end, k0, kc, tile):
    """tile[k * MR + r] = A[m0 + r, k0 + k] for r < MR, k < kc; zero from row m_end.
    A: (M, K) C-contiguous, or given as its transpose (K, M) when a_transposed (k outer:
    transposed operands are read along their rows); tile: (>= kc * MR,)"""
    rows = min(MR, m_end - m0)
    zero = zero_of(tile)
    if rows == MR:  # a whole tile: fixed-length columns, unrolled by LLVM
        if a_transposed:
            for k in range(kc):
                for r in range(MR):
                    tile[k * MR + r] = A[k0 + k, m0 + r]
        else:
            for k in range(kc):
                for r in range(MR):
                    tile[k * MR + r] = A[m0 + r, k0 + k]
        return
    for k in range(kc):
        for r in range(rows):
            tile[k * MR + r] = A[k0 + k, m0 + r] if a_transposed else A[m0 + r, k0 + k]
        for r in range(rows, MR):
            tile[k * MR + r] = zero


def scratch_length(m_lo, m_hi, p_lo, p_hi, K, dtype):
    """Elements of gemm_part's packing scratch for that share of a product with depth K:
    the packed panels of B, the packed row tiles of A and one edge block."""
    NR = columns_per_panel(dtype)
    kc_max = min(KC_BYTES // np.dtype(dtype).itemsize, K)
    n_tiles = -(-(m_hi - m_lo) // MR)
    n_panels = -(-(p_hi - p_lo) // NR)
    return (n_panels * NR + min(n_tiles, ROW_TILES_PER_JOB) * MR) * kc_max + MR * NR


@njit(**JIT_OPTIONS)
def gemm_part(A, a_transposed, B, B_panels, C, accumulate, m_lo, m_hi, p_lo, p_hi, scratch):
    """C[m_lo:m_hi, p_lo:p_hi] (+)= A[m_lo:m_hi] @ B[:, p_lo:p_hi] on one thread.
    A: (M, K), or its transpose (K, M) when a_transposed (the weight gradients' x_rows.T:
    one compiled kernel for both, where a Fortran-ordered A compiled a second); B: (K, P);
    both C-contiguous; C: (M, P) C-contiguous. B_panels: pack_panels(B) when the caller has
    it (then B itself is not read), else empty. scratch: (>= scratch_length(...),) for the
    packed operands, from the caller's memory pool (see _memory.py), or shorter (empty) to
    allocate them here.

    k-blocks of KC run one after another, so every element of C is summed in the same
    order however the rows and columns are shared out. Within a k-block, B is cut into
    NR-column panels, then A, ROW_TILES_PER_JOB tiles of MR rows at a time (kept in L2),
    meets every panel in the micro-kernel. A row-major A is read in place (packing cost
    more than it saved: each element of dx's A meets only one or two panels), and so is a
    row-major B that is small or meets at most two row tiles; the others, and the tiles and
    panels that cross an edge, are packed.
    """
    K = A.shape[0] if a_transposed else A.shape[1]
    P = C.shape[1]
    NR = panel_width(C)
    KC = k_block(C)
    n_tiles = (m_hi - m_lo + MR - 1) // MR
    n_panels = (p_hi - p_lo + NR - 1) // NR
    kc_max = min(KC, K)
    A_flat = A.reshape(-1)
    B_flat = B.reshape(-1)
    direct_A = not a_transposed
    # B read in place only when it is small or meets few row tiles (the bias gradients'
    # row of ones): there packing would cost more than it saves. Read in place, a panel's
    # rows lie a row of B apart: for the weight gradients (K = R rows of 4H values,
    # thousands of bytes apart) they fall into a few cache sets and evict each other, where
    # a packed panel is contiguous (docs/performance.md).
    direct_B = B_flat.shape[0] > 0 and (K * (p_hi - p_lo) < 1 << 16 or n_tiles <= 2)
    prepacked = B_panels.shape[0] > 0
    B_length = n_panels * NR * kc_max
    A_length = min(n_tiles, ROW_TILES_PER_JOB) * MR * kc_max
    need = B_length + A_length + MR * NR
    work = scratch if scratch.shape[0] >= need else np.empty(need, C.dtype)
    B_packed = work[:B_length]
    A_packed = work[B_length:B_length + A_length]
    edge_block = work[B_length + A_length:need]
    flat_C = C.reshape(-1)
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        add = accumulate or k0 > 0
        for j in range(n_panels):
            if not prepacked and (not direct_B or p_lo + (j + 1) * NR > p_hi):
                pack_b_panel(B, k0, kc, p_lo + j * NR, p_hi, B_packed[j * NR * kc:])
        for i0 in range(0, n_tiles, ROW_TILES_PER_JOB):
            i1 = min(i0 + ROW_TILES_PER_JOB, n_tiles)
            for i in range(i0, i1):
                if not direct_A or m_lo + (i + 1) * MR > m_hi:
                    pack_a_tile(A, a_transposed, m_lo + i * MR, m_hi, k0, kc,
                                A_packed[(i - i0) * MR * kc:])
            for j in range(n_panels):
                p0 = p_lo + j * NR
                full_panel = p0 + NR <= p_hi
                if prepacked:  # p0 is a whole number of panels in: see gemm
                    b_src, b_off, ldb = B_panels, p0 // NR * K * NR + k0 * NR, NR
                elif direct_B and full_panel:
                    b_src, b_off, ldb = B_flat, k0 * B.shape[1] + p0, B.shape[1]
                else:
                    b_src, b_off, ldb = B_packed, j * NR * kc, NR
                for i in range(i0, i1):
                    m0 = m_lo + i * MR
                    full_tile = m0 + MR <= m_hi
                    if direct_A and full_tile:
                        a_src, a_off, a_rs, a_ks = A_flat, m0 * K + k0, K, 1
                    else:
                        a_src, a_off, a_rs, a_ks = A_packed, (i - i0) * MR * kc, 1, MR
                    if full_tile and full_panel:
                        micro_kernel(a_src, a_off, a_rs, a_ks, b_src, b_off, ldb,
                                     flat_C, m0 * P + p0, P, kc, add)
                    else:
                        # Edge tile: the micro-kernel writes a whole MR x NR block; a tile
                        # of one real row (the bias gradients' row of ones) takes the
                        # one-row kernel instead of MR rows' work.
                        if m_hi - m0 == 1:
                            row_kernel(a_src, a_off, a_rs, a_ks, b_src, b_off, ldb,
                                       edge_block, 0, NR, kc, False)
                        else:
                            micro_kernel(a_src, a_off, a_rs, a_ks, b_src, b_off, ldb,
                                         edge_block, 0, NR, kc, False)
                        for r in range(min(MR, m_hi - m0)):
                            for q in range(min(NR, p_hi - p0)):
                                if add:
                                    C[m0 + r, p0 + q] += edge_block[r * NR + q]
                                else:
                                    C[m0 + r, p0 + q] = edge_block[r * NR + q]


# gemm_part's argument types (address.array_types), for kernels that call it through its
# address: gemm_at(address, (A, a_transposed, B, B_panels, C, accumulate, m_lo, m_hi, p_lo,
# p_hi, scratch)), the whole GEMM without linking it in again (kernels/address.py).
GEMM_PART_ARGS = "2b212biiii1"
gemm_at = caller(GEMM_PART_ARGS)


def _split_unit(M, P, NR):
    """(size, count) of the pieces split_bounds deals out for an (M, P) result: MR-row tiles
    of C when M >= P (each worker packs all of B, the smaller operand, itself), else
    whole NR-column panels (each packs all of A)."""
    size, extent = (MR, M) if M >= P else (NR, P)
    return size, (extent + size - 1) // size


def split_bounds(M, P, NR, workers, w):
    """The share of C worker w of ``workers`` computes: (m_lo, m_hi, p_lo, p_hi), whole
    pieces of _split_unit."""
    size, count = _split_unit(M, P, NR)
    lo = w * count // workers * size
    hi = min((w + 1) * count // workers * size, M if M >= P else P)
    return (lo, hi, 0, P) if M >= P else (0, M, lo, hi)


def gemm_share(w, workers, A, a_transposed, B, B_panels, C, accumulate, scratch):
    """gemm_part on worker w's share of C (split_bounds): what each of ``workers`` threads
    runs (_threads.run_workers). Arguments as gemm_part."""
    gemm_part(A, a_transposed, B, B_panels, C, accumulate,
              *split_bounds(C.shape[0], C.shape[1], columns_per_panel(C.dtype), workers, w),
              scratch)


def share_scratch_length(w, workers, A, a_transposed, C):
    """scratch_length of worker w's share (gemm_share) of the product A @ B -> C."""
    K = A.shape[0] if a_transposed else A.shape[1]
    return scratch_length(*split_bounds(C.shape[0], C.shape[1], columns_per_panel(C.dtype),
                                        workers, w), K, C.dtype)


# Rows of W that pack_panels and split.pack_unit_part copy into every panel before the next
# rows. A panel at a time, each row of W was read a panel's width (96 bytes of float32 on
# AVX2) at a time, rows a page apart: a memory latency per row once W is no longer in cache,
# which is how a time loop leaves it for the next call. PACK_ROWS rows at a time, each
# row's lines are read in order (figures in docs/performance.md).
PACK_ROWS = 8


@njit(**JIT_OPTIONS)
def pack_panels(W, transposed, panels):
    """W: (K, P), or given as its transpose (P, K) when ``transposed``, C-contiguous either
    way -> panels[:ceil(P / NR) * K * NR], its NR-column panels, k-major, zero-padded: the
    B operand of step_product. Done once per call for the recurrent weights, into memory
    the caller gives (from Python: fastrnn's pool, see _core.weight_panels; in a kernel:
    packed_panels). (A flag, not a Fortran-ordered view: each memory layout compiled a
    kernel of its own.)"""
    K, P = (W.shape[1], W.shape[0]) if transposed else (W.shape[0], W.shape[1])
    NR = panel_width(W)
    n_panels = (P + NR - 1) // NR
    zero = zero_of(W)
    # Each panel row written whole and in order. For the transpose a panel at a time,
    # from NR of its rows whose lines stay in L1 across consecutive k (q outer, every
    # write went to another cache line: 3x slower); else PACK_ROWS rows of W across every
    # panel at a time (see PACK_ROWS). Plain loops rather than gemm_part's pack_b_panel
    # (an unrolled whole-panel case): faster here, 0.2 s less to compile.
    rows = K if transposed else PACK_ROWS
    for k0 in range(0, K, rows):
        k1 = min(k0 + rows, K)
        for j in range(n_panels):
            panel = panels[j * K * NR:(j + 1) * K * NR]
            width = min(NR, P - j * NR)
            base = j * NR
            for k in range(k0, k1):
                out = panel[k * NR:(k + 1) * NR]
                if transposed:
                    for q in range(width):
                        out[q] = W[base + q, k]
                else:
                    row = W[k]
                    for q in range(width):
                        out[q] = row[base + q]
                for q in range(width, NR):
                    out[q] = zero


@njit(**JIT_OPTIONS)
def pack_transposed_by_tiles(W, panels):
    """pack_panels(W, True, panels), the panels of W.T for a C-contiguous W (P, K), by
    register tiles (transpose.transpose_tile: L rows of L elements loaded as L vectors,
    stored as L): every line read and written whole, where pack_panels' loop reads one
    element of each of NR rows per k. A panel's rows are taken a cache line of k at a time
    (LINE k, the panel's tiles side by side): rows 4 KB apart share one L1 set, and a line
    left for the next k-tile was gone by then (figures in docs/performance.md). A kernel
    of its own: inside pack_panels it would cost every kernel that packs plain weights
    compile time."""
    P, K = W.shape
    NR = panel_width(W)
    L = tile_lanes(W.itemsize)
    LINE = 64 // W.itemsize
    zero = zero_of(W)
    K_tiles = K - K % L
    for j in range((P + NR - 1) // NR):
        base = j * K * NR
        first = j * NR
        width = min(NR, P - first)
        q_tiles = width - width % L
        for k1 in range(0, K_tiles, LINE):
            for q0 in range(0, q_tiles, L):
                for k0 in range(k1, min(k1 + LINE, K_tiles), L):
                    transpose_tile(W, (first + q0) * K + k0, K, panels, base + k0 * NR + q0,
                                   NR)
        # What no tile covers: the last k's of the tiled columns, the panel's last columns
        # (fewer than L), and the zeros past P.
        for k in range(K):
            out = panels[base + k * NR:base + (k + 1) * NR]
            for q in range(0 if k >= K_tiles else q_tiles, width):
                out[q] = W[first + q, k]
            for q in range(width, NR):
                out[q] = zero


@njit(inline="always", **JIT_OPTIONS)
def packed_panels(W, transposed):
    """pack_panels(W, transposed) into a new array, inside a kernel."""
    K, P = (W.shape[1], W.shape[0]) if transposed else (W.shape[0], W.shape[1])
    NR = panel_width(W)
    panels = np.empty((P + NR - 1) // NR * K * NR, W.dtype)
    pack_panels(W, transposed, panels)
    return panels


@njit(inline="always", **JIT_OPTIONS)
def _step_tiles(A, k0, kc, panels, b_off, out, col, worker, workers, M):
    """One panel of a per-step product, out[m, col:col + NR] (+)= A[m, k0:k0 + kc] @ (the
    kc x NR block of the panels at b_off), for this worker's row tiles below M: a tile
    holding only row M - 1 goes through the one-row kernel, the others through the
    MR_STEP-row one (see step_product)."""
    K = A.shape[-1]
    ldc = out.shape[-1]
    NR = panel_width(out)
    for m0 in range(worker * MR_STEP, M, workers * MR_STEP):
        if M - m0 == 1:
            row_kernel(A, m0 * K + k0, K, 1, panels, b_off, NR, out, m0 * ldc + col, ldc, kc,
                       k0 > 0)
        else:
            step_kernel(A, m0 * K + k0, K, 1, panels, b_off, NR, out, m0 * ldc + col, ldc, kc,
                        k0 > 0)


@njit(inline="always", **JIT_OPTIONS)
def step_product(A, panels, out, worker, workers, M, backwards=False):
    """out[m0:m0 + MR_STEP] = A[m0:m0 + MR_STEP] @ W, W (K, P) given as pack_panels(W), for
    this worker's row tiles m0 = worker * MR_STEP, (worker + workers) * MR_STEP, ... below M
    (a tile holding only row M - 1 uses the one-row kernel; which kernel a row gets depends
    on M only, never on the worker count).

    A: (rows, K) C-contiguous; out: (rows, >= P rounded up to NR) C-contiguous; both with
    rows padded to a multiple of MR_STEP. A row of out depends on the same row of A only,
    so the rows past a batch's end are harmless scratch: a tile of 2 or 3 real rows streams
    W once, not once per row. Panel by panel, each panel meeting all the worker's tiles
    while it is in cache: tile by tile, every tile streamed all of W, 1 MB at H = 256,
    through the caches.
    """
    K = A.shape[1]
    NR = panel_width(out)
    # k-pieces as deep as the big GEMM's (a piece of a panel read from L2 by each tile):
    # quarter-deep pieces that stayed in L1 were slower (docs/performance.md).
    KC = k_block(out)
    # A and out go to the micro-kernel as they are (it takes element offsets from their
    # data pointers): a reshape(-1) per step called into numba's C helper.
    n_panels = panels.shape[0] // (K * NR)
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        for i in range(n_panels):
            j = n_panels - 1 - i if backwards else i
            _step_tiles(A, k0, kc, panels, j * K * NR + k0 * NR, out, j * NR, worker,
                        workers, M)


@njit(inline="always", **JIT_OPTIONS)
def step_product_in_place(A, W, out, M, rows_apart, p_lo, p_hi):
    """out[:M, p_lo:p_hi] = A[:M] @ W[:, p_lo:p_hi], reading W (K, P), C-contiguous, where
    it lies: for a single step, packing W into panels first would copy more than the
    product reads. p_lo < p_hi.

    W is read row by row, each row's range of columns once per k-block, rather than a
    column block at a time down all K rows: at 4H = 1024 float32 columns the rows lie
    4 KB apart, so a column block's rows all fall in the same L1 and L2 cache sets and
    each row is a new page for the prefetchers; the per-element sums, which a column
    block keeps in registers, live in a small scratch array (L1) instead.

    The bits are step_product's: each element gets the sums the micro-kernel gives it,
    in the same order (ROW_WAYS interleaved sums per k-block through the one-row kernel,
    one through the MR_STEP-row kernel, the k-blocks added onto out), so a step computed
    here equals the sequence kernels' to the bit, however its columns are split between
    workers. A: (rows, K), rows padded to MR_STEP unless rows_apart (every row through the
    one-row kernel, as steps_product takes a single step's input projection);
    out: (rows, >= P).
    """
    K, P = W.shape
    KC = k_block(out)
    ldc = out.shape[1]
    width = p_hi - p_lo
    sums = np.empty(max(ROW_WAYS, MR_STEP) * (width + SUMS_SKEW), out.dtype)
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        for m0 in range(0, M, MR_STEP):
            if rows_apart or M - m0 == 1:
                for n in range(m0, min(m0 + MR_STEP, M)):
                    row_stream_kernel(A, n * K + k0, K, W, k0 * P + p_lo, P, kc, width, sums,
                                      out, n * ldc + p_lo, ldc, k0 > 0)
            else:
                step_stream_kernel(A, m0 * K + k0, K, W, k0 * P + p_lo, P, kc, width, sums,
                                   out, m0 * ldc + p_lo, ldc, k0 > 0)


@njit(inline="always", **JIT_OPTIONS)
def steps_product(x, t0, S, panels, out, worker, workers, active):
    """out[s, n] = x[n, t0 + s] @ W for s < S and the rows n < active[t0 + s] of this
    worker's row tiles (dealt as in step_product): the input projection of S steps at once.
    x: (N, T, K); W given as pack_panels(W); out: (>= S, >= N, >= P rounded up to NR).

    A sequence's inputs at consecutive steps are adjacent rows of x, so each row goes
    through the MR-row micro-kernel MR steps at a time, like one GEMM over its steps (the
    last few steps of a row one at a time): one step per call, the single sequences of
    online inference streamed W once per step and row. And each piece of W meets the rows
    of all S steps while it is in cache, rather than being streamed once per step.

    Bits: steps are grouped MR at a time from t0, so a step's row gets the same kernel for
    any S that is a multiple of MR or covers all steps (_core.chunk_steps keeps to those),
    whatever the worker count.
    """
    T, K = x.shape[1], x.shape[2]
    ldc = out.shape[2]
    step_size = out.shape[1] * ldc
    NR = panel_width(out)
    KC = k_block(out)  # as in step_product
    for k0 in range(0, K, KC):
        kc = min(KC, K - k0)
        for j in range(panels.shape[0] // (K * NR)):
            b_off = j * K * NR + k0 * NR
            for m0 in range(worker * MR_STEP, active[t0], workers * MR_STEP):
                for n in range(m0, min(m0 + MR_STEP, active[t0])):
                    steps = S  # the steps of the chunk sequence n runs (a prefix: sorted)
                    while active[t0 + steps - 1] <= n:
                        steps -= 1
                    a_off = n * T * K + t0 * K + k0
                    o_off = n * ldc + j * NR
                    s = 0
                    while s + MR <= steps:
                        micro_kernel(x, a_off + s * K, K, 1, panels, b_off, NR, out,
                                     o_off + s * step_size, step_size, kc, k0 > 0)
                        s += MR
                    for s in range(s, steps):
                        row_kernel(x, a_off + s * K, K, 1, panels, b_off, NR, out,
                                   o_off + s * step_size, step_size, kc, k0 > 0)


@njit(inline="always", **JIT_OPTIONS)
def chunk_scratch_like(h, S, P):
    """Scratch for S steps of per-step products, inside a kernel: (S, rows of h, P rounded
    up to a panel), as _core.chunk_scratch makes it from Python."""
    NR = panel_width(h)
    return np.empty((S, h.shape[0], (P + NR - 1) // NR * NR), h.dtype)


def padded_rows(N):
    """Rows of the state buffers step_product reads and writes: N rounded up to MR_STEP."""
    return -(-N // MR_STEP) * MR_STEP


def padded_columns(P, dtype):
    """Columns of step_product's output for P real ones: rounded up to a panel."""
    NR = columns_per_panel(dtype)
    return -(-P // NR) * NR


def worker_count(rows, threads):
    """Workers for a time loop over ``rows`` sequences: at most one per MR_STEP-row tile
    and at most ``threads``."""
    return max(1, min(threads, (rows + MR_STEP - 1) // MR_STEP))


def gemm_worker_count(M, P, threads, dtype):
    """Workers for a product with an (M, P) result: at most one per share split_bounds
    can make and at most ``threads``."""
    return max(1, min(threads, _split_unit(M, P, columns_per_panel(dtype))[1]))


# The input projection, the per-step product and the single step's in-place product as
# kernels of their own, for the time loops and step kernels to call through their addresses
# (kernels/address.py): compiled once per dtype, not again inside every kernel that uses
# them, the biggest pieces each one inlined.
STEPS_PRODUCT_ARGS = "3ii13iiI"
STEP_PRODUCT_ARGS = "212iiib"
IN_PLACE_ARGS = "222ibii"


@njit(**JIT_OPTIONS)
def steps_product_kernel(x, t0, S, panels, out, worker, workers, active):
    """steps_product, called through its address (_core.projection_address)."""
    steps_product(x, t0, S, panels, out, worker, workers, active)


# steps_product_at(address, (x, t0, S, panels, out, worker, workers, active)) in a kernel:
# steps_product_kernel at ``address``.
steps_product_at = caller(STEPS_PRODUCT_ARGS)


@njit(**JIT_OPTIONS)
def step_product_kernel(A, panels, out, worker, workers, M, backwards):
    """step_product, called through its address (_core.product_address)."""
    step_product(A, panels, out, worker, workers, M, backwards)


# step_product_at(address, (A, panels, out, worker, workers, M, backwards)) in a kernel:
# step_product_kernel at ``address``.
step_product_at = caller(STEP_PRODUCT_ARGS)


@njit(**JIT_OPTIONS)
def in_place_kernel(A, W, out, M, rows_apart, p_lo, p_hi):
    """step_product_in_place, called through its address (_core.in_place_address)."""
    step_product_in_place(A, W, out, M, rows_apart, p_lo, p_hi)


# in_place_at(address, (A, W, out, M, rows_apart, p_lo, p_hi)) in a kernel: in_place_kernel
# at ``address``.
in_place_at = caller(IN_PLACE_ARGS)


setup_kernels(globals())  # every kernel above: see _config.py
