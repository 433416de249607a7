"""Shapes, inputs and implementations shared by the benchmark modules.

Implementations: "fastrnn", "reference" (fastrnn.reference, plain NumPy) and "torch"
(torch.nn.LSTM / GRU / RNN on the CPU, same weights; skipped when torch is not installed).
"""

from fastrnn import bench

# (T, N, D, H): tiny (online inference), medium, large, long sequence.
SHAPES = [(50, 1, 32, 32), (100, 16, 64, 128), (200, 32, 512, 512), (1000, 16, 64, 128)]
SHAPE_IDS = [str(s) for s in SHAPES]
DTYPES = ["float32", "float64"]
IMPLS = ["fastrnn", "reference", "torch"]
# The NumPy reference is not timed at the two big shapes: seconds per call there, most of
# asv run --quick's time, and its speed is not in question (bench_ratios has it at
# (100, 16, 64, 128)).
REFERENCE_SKIPPED = {SHAPE_IDS[2], SHAPE_IDS[3]}


def parse(shape_id):
    return tuple(int(v) for v in shape_id.strip("()").split(","))


def setup_impl(cell, shape_id, dtype, impl, warm=("forward", "forward_backward")):
    """(inputs, forward, forward+backward) with compilation done: one call of each function
    named in ``warm`` (only what the benchmark times: at the big shapes each warm-up call
    costs seconds, paid again for every parameter set under asv run --quick).

    Raises NotImplementedError (asv: skip) for torch when torch is not installed.
    """
    if impl == "reference" and shape_id in REFERENCE_SKIPPED:
        raise NotImplementedError("the reference is not timed at this shape (see common.py)")
    T, N, D, H = parse(shape_id)
    p = bench.make_inputs(cell, T, N, D, H, dtype)
    if impl == "torch":
        fns = bench.torch_impl(cell, p)
        if fns is None:
            raise NotImplementedError("torch is not installed")
    else:
        import fastrnn
        from fastrnn import reference
        fns = bench.numpy_impl(fastrnn if impl == "fastrnn" else reference, cell)
    fwd, fwdbwd, _ = fns
    for name, fn in (("forward", fwd), ("forward_backward", fwdbwd)):
        if name in warm:
            fn(p)
    return p, fwd, fwdbwd
