"""examples/char_lstm.py: the two backends agree step by step, the model learns, and
--output / --plot write what they say (run in-process through its main(argv))."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "char_lstm.py"
TEXT = "the quick brown fox jumps over the lazy dog. " * 60


@pytest.fixture(scope="module")
def char_lstm():
    spec = importlib.util.spec_from_file_location("char_lstm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("char_lstm") / "fox.txt"
    path.write_text(TEXT)
    return path


def _run(char_lstm, text_file, *extra):
    argv = ["--text", str(text_file), "--steps", "40", "--batch", "6", "--seq-len", "12",
            "--hidden", "32", "--embed", "8", "--lr", "1e-2", "--dtype", "float64",
            "--seed", "3", "--sample-every", "20", "--sample-chars", "30", "--quiet", *extra]
    return char_lstm.main(argv)


@pytest.fixture(scope="module")
def histories(char_lstm, text_file):
    return {backend: _run(char_lstm, text_file, "--backend", backend)
            for backend in ("fastrnn", "reference")}


def test_backends_agree(histories):
    fast, ref = (np.array(histories[b]["loss"]) for b in ("fastrnn", "reference"))
    assert fast.shape == ref.shape == (40,)
    rel = np.abs(fast - ref) / np.abs(ref)
    assert rel.max() <= 1e-6, f"loss differs at step {rel.argmax() + 1}: {fast} vs {ref}"
    # Sampling (lstm_step_forward, the same seeded draws) gives the same text too.
    assert histories["fastrnn"]["samples"] == histories["reference"]["samples"]
    assert [s["step"] for s in histories["fastrnn"]["samples"]] == [20, 40]
    assert all(len(s["text"]) == 30 and set(s["text"]) <= set(TEXT)
               for s in histories["fastrnn"]["samples"])


def test_loss_decreases(histories):
    loss = np.array(histories["fastrnn"]["loss"])
    assert np.isfinite(loss).all()
    assert loss[0] == pytest.approx(np.log(len(set(TEXT))), rel=0.1)  # near uniform at first
    assert loss[-5:].mean() < 0.6 * loss[0], loss


def test_output_and_plot(char_lstm, text_file, tmp_path, capsys):
    out, png = tmp_path / "hist.json", tmp_path / "loss.png"
    history = _run(char_lstm, text_file, "--steps", "3", "--output", str(out), "--plot", str(png))
    saved = json.loads(out.read_text())
    assert {"loss", "seconds_per_step", "warmup_seconds", "config"} <= saved.keys()
    assert saved["loss"] == history["loss"] and len(saved["seconds_per_step"]) == 3
    assert all(isinstance(v, float) and v > 0 for v in saved["loss"] + saved["seconds_per_step"])
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in capsys.readouterr().err and not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
