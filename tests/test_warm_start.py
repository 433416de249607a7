"""A process whose kernels are in numba's cache loads them without refreshing numba's target
context (fastrnn._config.load_without_refreshing: most of a warm first call's cost), and
what it loads computes what the reference does."""

import json
import subprocess
import sys

import pytest

from fastrnn._config import JIT_OPTIONS

# Counts the refreshes of numba's target context, then runs an LSTM forward and backward
# (float64, odd shapes) and prints the count and the largest difference from the reference.
SCRIPT = """
import json
import numpy as np
from numba.core.registry import cpu_target
import fastrnn

context_type = type(cpu_target.target_context)
refresh, refreshes = context_type.refresh, []
context_type.refresh = lambda self: (refreshes.append(1), refresh(self))[1]
rng = np.random.default_rng(0)
N, T, D, H = 3, 5, 4, 7
x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
Wx, Wh, b = (rng.standard_normal(s) * 0.3 for s in ((D, 4 * H), (H, 4 * H), (4 * H,)))
dh = rng.standard_normal((N, T, H))
got_h, cache = fastrnn.lstm_forward(x, h0, Wx, Wh, b)
got = (got_h,) + fastrnn.lstm_backward(dh, cache)
want_h, ref_cache = fastrnn.reference.lstm_forward(x, h0, Wx, Wh, b)
want = (want_h,) + fastrnn.reference.lstm_backward(dh, ref_cache)
error = max(float(np.max(np.abs(g - w)) / np.max(np.abs(w))) for g, w in zip(got, want))
print(json.dumps({"refreshes": len(refreshes), "error": error}))
"""


@pytest.mark.skipif(not JIT_OPTIONS["cache"], reason="numba's cache is off here")
def test_a_warm_process_loads_kernels_without_refreshing_numba():
    def run():
        done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                              check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    run()  # compiles into the cache what is not there yet
    warm = run()
    assert warm["refreshes"] == 0
    assert warm["error"] < 1e-10
