"""A character-level LSTM language model in plain NumPy on fastrnn (min-char-rnn style).

The model reads a text one character at a time and learns to predict the next one:
an embedding lookup, one LSTM layer (fastrnn.lstm_forward / lstm_backward), an affine
layer to the vocabulary and a softmax cross-entropy loss, trained by truncated
backpropagation through time with gradient clipping (fastrnn.clip_grad_norm) and Adam.
Every so often it samples text from the model, one character at a time with
lstm_step_forward.

    python examples/char_lstm.py                          # Python's own stdlib source as text
    python examples/char_lstm.py --text book.txt --steps 2000 --plot loss.png
    python examples/char_lstm.py --backend reference --dtype float64 --steps 30

The default text is a fixed list of the standard library's .py files (nothing is
downloaded). The batch holds N streams that start at evenly spaced offsets of the text
and move forward T characters a step; the LSTM state (h, c) is carried from one chunk to
the next (cache.final_h, cache.final_c) but no gradient crosses a chunk boundary.
``--backend reference`` runs the same model on fastrnn.reference's plain NumPy LSTM:
clipping, Adam and everything else is shared, so the losses agree to rounding.

Timing: before step 1 the script runs one untimed forward/backward of the real batch
shape and a two-character sample (numba compiles or loads its kernels then, and fastrnn
picks its schedule by size, so a smaller warm-up could miss kernels), reported as
``warmup_seconds``; ``seconds_per_step`` times forward, backward, clipping and Adam
only (not sampling). ``--output hist.json`` saves the per-step loss (mean
per-character cross-entropy, in nats) and times; tqdm and matplotlib are used if present.
With the fastrnn backend NumPy's BLAS gets one thread (via threadpoolctl, if installed;
see blas_threads).

Letters: N batch, T time steps, V vocabulary, E embedding, H hidden units.
"""

import argparse
import contextlib
import json
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

import fastrnn
import fastrnn.reference

try:
    from tqdm import tqdm
except ImportError:
    tqdm = None
try:
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

BACKENDS = {"fastrnn": fastrnn, "reference": fastrnn.reference}
# In every CPython >= 3.10; missing ones are skipped.
STDLIB_FILES = ("argparse.py", "dataclasses.py", "enum.py", "functools.py", "inspect.py",
                "os.py", "textwrap.py", "typing.py")
MAX_CHARS = 1 << 20


def load_text(path=None):
    """The text of ``path``, or the standard library files above, concatenated."""
    if path is not None:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / name for name in sorted(STDLIB_FILES) if (stdlib / name).is_file()]
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in files)[:MAX_CHARS]


def encode(text):
    """Returns (data: (len(text),) int indices into vocab, vocab: the sorted characters)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    points = np.unique(codes)
    return np.searchsorted(points, codes), "".join(map(chr, points))


def init_params(V, E, H, rng, dtype):
    """Weights drawn in float64 (the same start in either dtype), then cast."""
    b = np.zeros(4 * H)
    b[H:2 * H] = 1.0                                        # forget gate open at first
    params = {
        "W_embed": rng.standard_normal((V, E)),             # (V, E)
        "Wx": rng.standard_normal((E, 4 * H)) / np.sqrt(E),  # (E, 4H), gates i, f, o, g
        "Wh": rng.standard_normal((H, 4 * H)) / np.sqrt(H),  # (H, 4H)
        "b": b,                                              # (4H,)
        "W_out": rng.standard_normal((H, V)) / np.sqrt(H),   # (H, V)
        "b_out": np.zeros(V),                                # (V,)
    }
    return {k: v.astype(dtype) for k, v in params.items()}


def final_state(cache):
    """(final_h, final_c), each (N, H): fastrnn's cache has attributes, the reference's
    is a dict."""
    if isinstance(cache, dict):
        return cache["final_h"], cache["final_c"]
    return cache.final_h, cache.final_c


def forward_backward(params, inputs, targets, h0, c0, backend):
    """Loss and gradients of one chunk.

    Inputs:
    - inputs, targets: (N, T) character indices; targets[:, t] follows inputs[:, t]
    - h0, c0: (N, H) states carried from the previous chunk (no gradient flows to them)
    - backend: fastrnn or fastrnn.reference

    Returns a tuple of: loss (mean cross-entropy per character, nats), grads (a dict like
    params), (final_h, final_c) (N, H) for the next chunk.
    """
    N, T = inputs.shape
    H = h0.shape[1]
    x = params["W_embed"][inputs]                                              # (N, T, E)
    h, cache = backend.lstm_forward(x, h0, params["Wx"], params["Wh"], params["b"], c0=c0)
    h_flat = h.reshape(N * T, H)                                               # (NT, H)
    scores = h_flat @ params["W_out"] + params["b_out"]                        # (NT, V)
    scores -= scores.max(axis=1, keepdims=True)
    log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))     # (NT, V)
    rows, flat_targets = np.arange(N * T), targets.ravel()
    loss = -log_probs[rows, flat_targets].mean()

    dscores = np.exp(log_probs)                                                # (NT, V)
    dscores[rows, flat_targets] -= 1
    dscores /= N * T
    grads = {"W_out": h_flat.T @ dscores, "b_out": dscores.sum(axis=0)}
    dh = (dscores @ params["W_out"].T).reshape(N, T, H)                        # (N, T, H)
    dx, _, grads["Wx"], grads["Wh"], grads["b"] = backend.lstm_backward(dh, cache)
    grads["W_embed"] = np.zeros_like(params["W_embed"])                        # (V, E)
    np.add.at(grads["W_embed"], inputs, dx)
    return float(loss), grads, final_state(cache)


def adam_step(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam update of params in place; state holds "t" and the moments "m", "v"."""
    state["t"] += 1
    t = state["t"]
    step = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)   # both bias corrections
    for name, g in grads.items():
        m, v = state["m"][name], state["v"][name]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        params[name] -= step * m / (np.sqrt(v) + eps)


def sample(params, backend, start, n_chars, rng):
    """n_chars character indices drawn one at a time at N = 1 from a zero state, the
    first conditioned on character index ``start``."""
    H = params["Wh"].shape[0]
    h = c = np.zeros((1, H), params["Wh"].dtype)                              # (1, H)
    index, out = start, []
    for _ in range(n_chars):
        x = params["W_embed"][index][None]                                   # (1, E)
        h, c, _ = backend.lstm_step_forward(x, h, c, params["Wx"], params["Wh"], params["b"])
        scores = (h @ params["W_out"] + params["b_out"])[0].astype(np.float64)  # (V,)
        p = np.exp(scores - scores.max())
        index = int(rng.choice(len(p), p=p / p.sum()))
        out.append(index)
    return out


def plot_loss(losses, path, title):
    """A PNG of the loss per step and its running mean (Agg; skipped without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed (pip install matplotlib); not writing {path}",
              file=sys.stderr)
        return
    steps, k = np.arange(1, len(losses) + 1), max(1, len(losses) // 100)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.35, label="per step")
    smooth = np.convolve(losses, np.ones(k) / k, "valid")   # running mean of k steps
    ax.plot(steps[k - 1:], smooth, label=f"mean of {k} steps")
    ax.set(xlabel="step", ylabel="loss per character (nats)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--text", help="text file to learn (default: Python stdlib sources)")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--backend", choices=sorted(BACKENDS), default="fastrnn")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the sampling")
    p.add_argument("--hidden", type=int, default=256, help="H")
    p.add_argument("--embed", type=int, default=32, help="E")
    # N = 4 is one row tile, whose steps fastrnn shares out over the threads by hidden
    # units; the NumPy reference's time there is mostly per-step overhead. At N = 32 in
    # float64 the reference's BLAS products narrow fastrnn's lead (README, Threads).
    p.add_argument("--batch", type=int, default=4, help="N")
    p.add_argument("--seq-len", type=int, default=50, help="T, steps of BPTT per chunk")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=5.0, help="max gradient norm")
    p.add_argument("--sample-every", type=int, help="steps between samples "
                   "(default: steps // 3; 0: never)")
    p.add_argument("--sample-chars", type=int, default=200)
    p.add_argument("--output", help="write the history as JSON here")
    p.add_argument("--plot", help="write a PNG of loss vs step here (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    return p.parse_args(argv)


def blas_threads(backend_name):
    """One BLAS thread under fastrnn (if threadpoolctl is installed): OpenBLAS's idle
    workers spin for a while after each product and take the cores from fastrnn's
    threads, and NumPy's products here are only the small output layer. The reference
    keeps NumPy's default threads, as a plain NumPy user would."""
    if backend_name == "fastrnn" and threadpool_limits is not None:
        return threadpool_limits(1, user_api="blas")
    return contextlib.nullcontext()


def main(argv=None):
    """Train as the command line says; returns the history dict (see --output)."""
    args = parse_args(argv)
    with blas_threads(args.backend):
        history = train(args)
    if args.output:
        Path(args.output).write_text(json.dumps(history, indent=1))
    if args.plot:
        plot_loss(history["loss"], args.plot, f"char-LSTM, {args.backend} {args.dtype}, "
                  f"N={args.batch} T={args.seq_len} H={args.hidden}")
    return history


def train(args):
    """The training loop of main; returns the history."""
    backend, dtype = BACKENDS[args.backend], np.dtype(args.dtype)
    N, T, H = args.batch, args.seq_len, args.hidden
    data, vocab = encode(load_text(args.text))
    span = len(data) // N             # stream n reads data[n * span:(n + 1) * span]
    chunks = (span - 1) // T          # chunks per stream before it starts over
    if chunks < 1:
        sys.exit(f"the text has {len(data)} characters; --batch {N} --seq-len {T} needs "
                 f"at least {N * (T + 1)}")
    offsets = np.arange(N)[:, None] * span + np.arange(T)                   # (N, T)
    init_rng, sample_rng = map(np.random.default_rng, np.random.SeedSequence(args.seed).spawn(2))
    params = init_params(len(vocab), args.embed, H, init_rng, dtype)
    adam = {"t": 0, "m": {k: np.zeros_like(v) for k, v in params.items()},
            "v": {k: np.zeros_like(v) for k, v in params.items()}}
    sample_every = max(1, args.steps // 3) if args.sample_every is None else args.sample_every
    start = vocab.find("\n") if "\n" in vocab else 0

    zeros = np.zeros((N, H), dtype)
    tic = time.perf_counter()         # untimed warm-up: compile or load the kernels
    forward_backward(params, data[offsets], data[offsets + 1], zeros, zeros, backend)
    sample(params, backend, start, 2, np.random.default_rng(0))
    history = {"loss": [], "seconds_per_step": [], "samples": [],
               "warmup_seconds": time.perf_counter() - tic,
               "config": {**vars(args), "vocab_size": len(vocab), "text_chars": len(data)}}
    steps = range(1, args.steps + 1)
    bar = tqdm(steps, disable=args.quiet) if tqdm is not None else None
    say = (lambda *a: None) if args.quiet else print if bar is None else bar.write
    say(f"{len(data)} characters, V = {len(vocab)}, N = {N}, T = {T}, H = {H}, "
        f"{args.backend} {dtype.name}; warm-up {history['warmup_seconds']:.1f} s")

    for step in bar if bar is not None else steps:
        j = (step - 1) % chunks
        if j == 0:                    # every stream (re)starts its span from a zero state
            h, c = zeros, zeros
        pos = offsets + j * T
        tic = time.perf_counter()
        loss, grads, (h, c) = forward_backward(params, data[pos], data[pos + 1], h, c, backend)
        grads, _ = fastrnn.clip_grad_norm(grads, max_norm=args.clip, inplace=True)
        adam_step(params, grads, adam, args.lr)
        seconds = time.perf_counter() - tic
        history["loss"].append(loss)
        history["seconds_per_step"].append(seconds)
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.3f}", chars_per_s=f"{N * T / seconds:.0f}",
                            refresh=False)
        elif step == 1 or step % max(1, args.steps // 10) == 0:
            say(f"step {step:5d}  loss {loss:.3f}  {N * T / seconds:8.0f} chars/s")
        if sample_every and step % sample_every == 0:
            text = "".join(vocab[i] for i in sample(params, backend, start,
                                                    args.sample_chars, sample_rng))
            history["samples"].append({"step": step, "text": text})
            say(f"----- sample at step {step}\n{text}\n-----")
    return history


if __name__ == "__main__":
    main()
