"""fastrnn: fused Numba kernels for vanilla RNN, LSTM and GRU layers, forward and backward, on the CPU.

Same functions, arguments and return tuples as cs231n's ``rnn_layers.py``:

    h, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b)
    dx, dh0, dWx, dWh, db = fastrnn.lstm_backward(dh, cache)

Shapes: x (N, T, D), h0 (N, H), LSTM Wx (D, 4H), Wh (H, 4H), b (4H,) with gates i, f, o, g
along the 4H axis; RNN Wx (D, H), Wh (H, H), b (H,); GRU (PyTorch's semantics) Wx (D, 3H),
Wh (H, 3H), bx (3H,), bh (3H,) with gates r, z, n. ``fastrnn.reference`` holds plain NumPy
versions of every function. ``fastrnn.torch`` (imported on its own; needs PyTorch) holds
drop-in ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` modules running on these kernels.
"""

import importlib as _importlib

__version__ = "0.1.0"

# ``import fastrnn`` imports numba and the machinery every call uses (_core: the GEMM, the
# threads, the checks); each cell's API and kernels, the reference, stacks and training
# utilities are imported on first use (PEP 562's module __getattr__). Importing all of them
# made some sixty numba dispatchers and, where no bytecode is kept, compiled every module
# from source: a third again of numba's own import time.
_importlib.import_module(f"{__name__}._core")
_EXPORTS = {
    "lstm": ("LSTMCache", "lstm_backward", "lstm_forward", "lstm_inference",
             "lstm_step_backward", "lstm_step_forward"),
    "gru": ("GRUCache", "gru_backward", "gru_forward", "gru_inference", "gru_step_backward",
            "gru_step_forward"),
    "rnn": ("RNNCache", "rnn_backward", "rnn_forward", "rnn_inference", "rnn_step_backward",
            "rnn_step_forward"),
    "_memory": ("release_memory",),
    "_threads": ("get_num_threads", "set_num_threads"),
    "_validate": ("get_check_finite", "set_check_finite"),
    "training": ("clip_grad_norm", "clip_grad_value"),
    "stack": ("StackCache", "reverse_within_lengths", "stack_backward", "stack_forward",
              "weights_from_torch"),
}
_DEFINED_IN = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name):
    """A public name, or a submodule (``fastrnn.reference``), imported on first use."""
    module = _DEFINED_IN.get(name, name)
    try:
        imported = _importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{module}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = imported if module == name else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


def precompile(cells=("lstm", "gru", "rnn"), dtypes=("float32", "float64"), processes=None,
               progress=True):
    """Compile and cache every kernel the given cells can run in the given dtypes, in
    parallel processes (``processes``, default the machine's cores), printing a line per
    finished job to stderr when ``progress``; afterwards a new process's first calls load
    the kernels from numba's cache instead of compiling them. Returns {(cell, dtype):
    seconds}. Also ``python -m fastrnn.precompile``. See fastrnn._precompile."""
    from ._precompile import precompile as run
    return run(cells, dtypes, processes, progress)


def show_config(file=None):
    """Print, and return as a dict, the target fastrnn's kernels are compiled for: the ISA
    configuration chosen from numba's target (``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``
    honoured), the micro-kernel's tiles (rows x columns of C) and k-block depth, and the
    threads. Results are bit-identical for any thread count; other ISAs may differ from
    these results in the last bits."""
    import sys

    from ._isa import describe
    from ._threads import get_num_threads
    info = dict(describe(), threads=get_num_threads(), fastrnn=__version__)
    for key, value in info.items():
        print(f"{key:>24}: {value}", file=file or sys.stdout)
    return info


# The lazily imported names (above), the reference module and what is defined here.
__all__ = [*_DEFINED_IN, "reference", "show_config", "precompile"]
