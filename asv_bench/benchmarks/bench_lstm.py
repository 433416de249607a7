"""LSTM forward, forward+backward, inference and step functions.

fastrnn vs the NumPy reference vs torch.nn.LSTM, side by side over the same parameters, so
`asv compare` / the HTML report show the ratios.
"""

import fastrnn

from .common import DTYPES, IMPLS, SHAPE_IDS, setup_impl


class _LSTMCase:
    params = (SHAPE_IDS, DTYPES, IMPLS)
    param_names = ["shape (T, N, D, H)", "dtype", "impl"]
    timeout = 300

    warm = ()  # what the subclass times (setup_impl)

    def setup(self, shape, dtype, impl):
        self.p, self.fwd, self.fwdbwd = setup_impl("lstm", shape, dtype, impl, self.warm)


class LSTMForward(_LSTMCase):
    warm = ("forward",)

    def time_forward(self, shape, dtype, impl):
        self.fwd(self.p)


class LSTMForwardBackward(_LSTMCase):
    warm = ("forward_backward",)

    def time_forward_backward(self, shape, dtype, impl):
        self.fwdbwd(self.p)


class LSTMInference:
    """The cache-free path (torch's no_grad forward is timed in LSTMForward)."""
    params = (SHAPE_IDS, DTYPES)
    param_names = ["shape (T, N, D, H)", "dtype"]

    def setup(self, shape, dtype):
        self.p, _, _ = setup_impl("lstm", shape, dtype, "fastrnn", warm=())
        self.time_inference(shape, dtype)

    def time_inference(self, shape, dtype):
        p = self.p
        fastrnn.lstm_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])


class LSTMStep:
    """50 single steps, as a sampling loop runs them."""
    params = (["(1, 1, 32, 32)", "(1, 16, 64, 128)"], DTYPES)
    param_names = ["shape (T, N, D, H)", "dtype"]
    steps = 50

    def setup(self, shape, dtype):
        self.p, _, _ = setup_impl("lstm", shape, dtype, "fastrnn", warm=())
        p = self.p
        self.step = fastrnn.lstm_step_forward(p["x"][:, 0], p["h0"], p["c0"],
                                              p["Wx"], p["Wh"], p["b"])
        self.time_step_forward(shape, dtype)
        self.time_step_backward(shape, dtype)

    def time_step_forward(self, shape, dtype):
        p = self.p
        h, c = p["h0"], p["c0"]
        for _ in range(self.steps):
            h, c, _ = fastrnn.lstm_step_forward(p["x"][:, 0], h, c, p["Wx"], p["Wh"], p["b"])

    def time_step_backward(self, shape, dtype):
        next_h, next_c, cache = self.step
        for _ in range(self.steps):
            fastrnn.lstm_step_backward(next_h, next_c, cache)
