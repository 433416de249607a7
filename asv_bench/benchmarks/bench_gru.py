"""GRU forward, forward+backward and inference: fastrnn vs reference vs torch.nn.GRU."""

import fastrnn

from .common import DTYPES, IMPLS, SHAPE_IDS, setup_impl


class _GRUCase:
    params = (SHAPE_IDS, DTYPES, IMPLS)
    param_names = ["shape (T, N, D, H)", "dtype", "impl"]
    timeout = 300

    warm = ()  # what the subclass times (setup_impl)

    def setup(self, shape, dtype, impl):
        self.p, self.fwd, self.fwdbwd = setup_impl("gru", shape, dtype, impl, self.warm)


class GRUForward(_GRUCase):
    warm = ("forward",)

    def time_forward(self, shape, dtype, impl):
        self.fwd(self.p)


class GRUForwardBackward(_GRUCase):
    warm = ("forward_backward",)

    def time_forward_backward(self, shape, dtype, impl):
        self.fwdbwd(self.p)


class GRUInference:
    params = (SHAPE_IDS, DTYPES)
    param_names = ["shape (T, N, D, H)", "dtype"]

    def setup(self, shape, dtype):
        self.p, _, _ = setup_impl("gru", shape, dtype, "fastrnn", warm=())
        self.time_inference(shape, dtype)

    def time_inference(self, shape, dtype):
        p = self.p
        fastrnn.gru_inference(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], p["bh"])
