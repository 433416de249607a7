"""Vanilla RNN (tanh) forward, forward+backward and inference: fastrnn vs reference vs torch.nn.RNN."""

import fastrnn

from .common import DTYPES, IMPLS, SHAPE_IDS, setup_impl


class _RNNCase:
    params = (SHAPE_IDS, DTYPES, IMPLS)
    param_names = ["shape (T, N, D, H)", "dtype", "impl"]
    timeout = 300

    warm = ()  # what the subclass times (setup_impl)

    def setup(self, shape, dtype, impl):
        self.p, self.fwd, self.fwdbwd = setup_impl("rnn", shape, dtype, impl, self.warm)


class RNNForward(_RNNCase):
    warm = ("forward",)

    def time_forward(self, shape, dtype, impl):
        self.fwd(self.p)


class RNNForwardBackward(_RNNCase):
    warm = ("forward_backward",)

    def time_forward_backward(self, shape, dtype, impl):
        self.fwdbwd(self.p)


class RNNInference:
    params = (SHAPE_IDS, DTYPES)
    param_names = ["shape (T, N, D, H)", "dtype"]

    def setup(self, shape, dtype):
        self.p, _, _ = setup_impl("rnn", shape, dtype, "fastrnn", warm=())
        self.time_inference(shape, dtype)

    def time_inference(self, shape, dtype):
        p = self.p
        fastrnn.rnn_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
