"""The comparison command runs end to end (CI also runs its default grid) and its
single-product reference uses fastrnn's GEMM correctly."""

import json

import numpy as np

from fastrnn import bench


def test_bench_small_grid_writes_rows(tmp_path, capsys, monkeypatch):
    # The table's mechanics, not its figures: a small product stands in for the machine's
    # GEMM rate (4096 x 1024 x 1024, three blocks per dtype: most of this test's time), and
    # no pauses between NumPy's and fastrnn's timings.
    monkeypatch.setattr(bench, "gemm_rates",
                        lambda dtype: bench.product_rates(64, 48, 80, dtype, repeats=1))
    monkeypatch.setattr(bench, "SETTLE_SECONDS", 0)
    out = tmp_path / "rows.json"
    # float32 only (the default): float64 runs the same code, and compiling its kernels was
    # most of what was left of this test's time on a fresh clone.
    bench.main(["--shapes", "4,3,5,6", "--rnn-shapes", "3,2,4,5", "--gru-shapes", "",
                "--repeats", "1", "--no-torch", "--output", str(out)])
    printed = capsys.readouterr().out
    assert "all implementations agreed" in printed
    from fastrnn import _isa
    assert f"fastrnn_isa={_isa.TARGET.isa}" in printed  # every speed figure names its ISA
    assert "fastrnn / NumPy" in printed
    saved = json.loads(out.read_text())
    assert set(saved["gemm_gflops"]["float32"]) == {"numpy", "fastrnn"}
    rows = json.loads(out.read_text())["rows"]
    assert {(r["cell"], r["dtype"], r["impl"]) for r in rows} == {
        (cell, "float32", impl) for cell in ("lstm", "rnn") for impl in ("fastrnn", "reference")}
    assert all(r["fwd_ms"] > 0 and r["infer_ms"] > 0 and r["fwdbwd_ms"] > 0 for r in rows)
    assert all(np.isfinite(r["fwd_peak_fraction"]) for r in rows)


def test_product_gflops_is_a_rate():
    rate, which = bench.product_gflops(37, 29, 70, "float32", repeats=1)
    assert rate > 0 and which in ("numpy", "fastrnn")
