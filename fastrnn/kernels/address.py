"""Calling one compiled kernel from another through its address, not by linking it in.

When a jitted function calls another, numba links the callee's LLVM module into the
caller's and optimises and compiles the result again, so code called from several kernels
is compiled once per caller: the input projection (gemm.steps_product) inside each of the
seven time loops that run it, the time loop again inside lstm_train_small. Called through
its address, the callee is compiled once, on its own, and cached as usual; the call costs
what a call costs (the projection runs once per chunk of steps).

Every function numba compiles has a C-callable wrapper taking each argument by value in
numba's own data model (numba's first-class function types call through it), whose
address the library gives once the function is compiled or loaded from the cache.
``entry_address(dispatcher, dtype, layout)`` returns it for the argument types
``array_types(dtype, layout)`` spells out; a ``caller(layout)`` intrinsic calls it inside a
kernel. The address is a run-time argument, so the caller stays cacheable; it is valid in
the process that asked for it.

The caller must pass exactly those argument types: the intrinsic checks them when the
caller is compiled, so a mismatch fails the compilation rather than a call. The callee must
not raise (its wrapper would print the error and go on): the kernels called so have no
error paths.
"""

import functools

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, errors
from numba.extending import intrinsic


@functools.lru_cache(maxsize=None)
def entry_address(dispatcher, dtype, layout):
    """The address of ``dispatcher``'s C wrapper compiled for array_types(dtype, layout),
    compiling it or loading it from the cache first (once per process: cached here)."""
    signature = array_types(dtype, layout)
    dispatcher.compile(signature)
    result = dispatcher.overloads[signature]
    return result.library.get_pointer_to_function(result.fndesc.llvm_cfunc_wrapper_name)


def array_types(dtype, layout):
    """The numba types of the arguments a kernel of ``layout`` takes for float ``dtype``:
    layout is a string of "i" (int64), "b" (bool), "1"-"4" (C-contiguous float arrays of
    that many dimensions), "I" (a 1-D int64 array) and "(...)" (a tuple of what the
    parentheses hold)."""
    types_, rest = _parse_layout(numba.from_dtype(np.dtype(dtype)), layout)
    if rest:
        raise ValueError(f"unbalanced parentheses in layout {layout!r}")
    return types_


def _parse_layout(scalar, layout):
    """(types of layout up to its first unmatched ")", what follows that ")")."""
    parsed = []
    while layout and layout[0] != ")":
        code, layout = layout[0], layout[1:]
        if code == "(":
            members, layout = _parse_layout(scalar, layout)
            if not layout:
                raise ValueError("unbalanced parentheses in a layout")
            parsed.append(types.Tuple(members))
            layout = layout[1:]
        else:
            parsed.append({"i": types.int64, "b": types.boolean,
                           "I": types.Array(types.int64, 1, "C")}.get(code)
                          or types.Array(scalar, int(code), "C"))
    return tuple(parsed), layout


def _float_dtypes(arg_types):
    """The dtypes of the float arrays among ``arg_types``, tuples' members included."""
    for t in arg_types:
        if isinstance(t, types.BaseTuple):
            yield from _float_dtypes(t.types)
        elif isinstance(t, types.Array) and isinstance(t.dtype, types.Float):
            yield t.dtype


def caller(layout):
    """An intrinsic ``call(address, args)`` calling the function at ``address``
    (entry_address of a kernel compiled for array_types(dtype, layout)) with the tuple
    ``args``. Compiling a call whose arguments are not of exactly those types, for the
    dtype of its first float array, fails: the address is looked up for them."""
    @intrinsic
    def call(typingctx, address, args):
        dtypes = list(_float_dtypes(args.types))
        expected = array_types(str(dtypes[0]), layout) if dtypes else None
        if tuple(args.types) != expected:
            raise errors.TypingError(
                f"caller({layout!r}): arguments {args} are not the callee's {expected}")

        def codegen(context, builder, signature, llargs):
            arg_types = signature.args[1].types
            values = cgutils.unpack_tuple(builder, llargs[1], len(arg_types))
            function_type = ir.FunctionType(context.get_value_type(types.none),
                                            [context.get_value_type(t) for t in arg_types])
            builder.call(builder.inttoptr(llargs[0], function_type.as_pointer()), values)
            return context.get_dummy_value()

        return types.void(types.intp, args), codegen
    return call
