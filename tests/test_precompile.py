"""fastrnn.precompile: its job runner (with stand-in jobs, so nothing compiles here), its
argument checks, and that a job exercises every path it claims to."""

import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import _core, _precompile


def _stand_in(code):
    return lambda cell, dtype: [sys.executable, "-c", code]


def test_precompile_runs_every_job_and_reports_progress(monkeypatch, capsys):
    monkeypatch.setattr(_precompile, "_job_command", _stand_in("pass"))
    seconds = fastrnn.precompile(cells=["gru", "rnn"], dtypes=["float64"], processes=2)
    assert sorted(seconds) == [("gru", "float64"), ("rnn", "float64")]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("[####################] 2/2 ")


def test_precompile_names_a_failed_job(monkeypatch):
    monkeypatch.setattr(_precompile, "_job_command",
                        _stand_in("import sys; sys.exit('no such kernel')"))
    with pytest.raises(RuntimeError, match="precompiling lstm float32 failed:\nno such kernel"):
        fastrnn.precompile(cells=["lstm"], dtypes=["float32"], progress=False)


@pytest.mark.parametrize("cells, dtypes, message", [
    (["lstm", "gru2"], ["float32"], r"cells must be a non-empty selection of \('lstm'"),
    ([], ["float32"], "cells must be"),
    (["rnn"], ["float16"], r"dtypes must be a non-empty selection of \('float32'"),
])
def test_precompile_rejects_unknown_cells_and_dtypes(cells, dtypes, message):
    with pytest.raises(ValueError, match=message):
        fastrnn.precompile(cells=cells, dtypes=dtypes)


def test_command_line_exits_with_the_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _precompile.main(["--cells", "lstm,elman"])
    assert exit_info.value.code == 1
    assert "cells must be" in capsys.readouterr().err


def test_job_shapes_take_every_path():
    """The shapes _exercise uses reach the paths they are there for, on 2 threads (if the
    thresholds move, these shapes must move with them)."""
    (N0, _, D0, H0), (N1, _, D1, H1), (N2, T2, D2, H2), (N3, T3, D3, H3) = (
        _precompile.SEQUENCE_SHAPES)
    assert _core.worker_count(N0, 2) == 1 and _core.worker_count(N1, 2) == 2
    assert _core.loop_split(N2, D2, H2, 4, 2) is not None
    assert _core.loop_split(N2, D2, H2, 3, 2) is not None  # the GRU's too
    assert 2 * N2 * T2 * (D2 + H2) * 3 * H2 >= fastrnn._isa.PARALLEL_MIN_FLOPS
    assert _core.loop_split(N3, D3, H3, 1, 2) is not None  # the RNN's
    assert 2 * N3 * T3 * (D3 + H3) * 1 * H3 >= fastrnn._isa.PARALLEL_MIN_FLOPS
    in_place, split, batch = _precompile.STEP_SHAPES
    assert _core.single_worker_step(*in_place, 4)
    if fastrnn.get_num_threads() > 1:  # the split step needs a second thread
        with _core.step_split(*split, 4, np.float32) as bounds:
            assert bounds is not None
    assert batch[0] > fastrnn._isa.MR_STEP
