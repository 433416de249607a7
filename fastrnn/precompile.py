"""``python -m fastrnn.precompile [--cells lstm,gru,rnn] [--dtypes float32,float64]``:
compile and cache every kernel fastrnn can run (see fastrnn._precompile; from Python,
``fastrnn.precompile()``)."""

from ._precompile import main

if __name__ == "__main__":
    main()
