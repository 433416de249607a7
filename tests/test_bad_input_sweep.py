"""Every argument of every forward replaced by each kind of wrong value: only ValueError or
TypeError may come out (never a numba TypingError, an IndexError or a crash)."""

import numpy as np
import pytest

import fastrnn

N, T, D, H = 2, 3, 4, 5
SIGNATURES = {
    "lstm_forward": [(N, T, D), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,)],
    "lstm_inference": [(N, T, D), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,)],
    "gru_forward": [(N, T, D), (N, H), (D, 3 * H), (H, 3 * H), (3 * H,), (3 * H,)],
    "gru_inference": [(N, T, D), (N, H), (D, 3 * H), (H, 3 * H), (3 * H,), (3 * H,)],
    "rnn_forward": [(N, T, D), (N, H), (D, H), (H, H), (H,)],
    "rnn_inference": [(N, T, D), (N, H), (D, H), (H, H), (H,)],
    "lstm_step_forward": [(N, D), (N, H), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,)],
    "gru_step_forward": [(N, D), (N, H), (D, 3 * H), (H, 3 * H), (3 * H,), (3 * H,)],
    "rnn_step_forward": [(N, D), (N, H), (D, H), (H, H), (H,)],
}


def wrong_values(shape):
    return [None, 3.0, "text", [], np.zeros(shape, np.int32), np.zeros(shape, np.complex128),
            np.zeros(shape, bool), np.zeros(shape[:-1] or (2,)), np.zeros(shape + (1,)),
            np.zeros((shape[0] + 1,) + shape[1:]), np.zeros(shape, np.float32),
            np.zeros(shape, object)]


CASES = [(name, i, k) for name, shapes in SIGNATURES.items()
         for i, shape in enumerate(shapes) for k in range(len(wrong_values(shape)))]


@pytest.mark.parametrize("name,position,which", CASES)
def test_wrong_argument_raises_value_or_type_error(name, position, which):
    shapes = SIGNATURES[name]
    args = [np.random.default_rng(0).random(s) for s in shapes]
    args[position] = wrong_values(shapes[position])[which]
    with pytest.raises((ValueError, TypeError)):
        getattr(fastrnn, name)(*args)


@pytest.mark.parametrize("lengths", [[1, 2, 3], [-1, 2], [4, 1], [1.5, 2], "ab", [True, False], 3,
                                     np.array([[1, 2]])])
@pytest.mark.parametrize("name", ["lstm_forward", "gru_forward", "rnn_forward", "lstm_inference"])
def test_wrong_lengths_raise(name, lengths):
    args = [np.random.default_rng(0).random(s) for s in SIGNATURES[name]]
    with pytest.raises((ValueError, TypeError), match="lengths"):
        getattr(fastrnn, name)(*args, lengths=lengths)
