import os
import sys
from pathlib import Path

# helpers.py and cells.py live beside the tests; make them importable without a package.
sys.path.insert(0, str(Path(__file__).parent))

# pytest-xdist's workers keep every core busy already: a compile helper process per worker
# (fastrnn/_compiling.py) only adds processes (the suite took 14 % longer with them).
# tests/test_compiling.py turns them back on where it tests them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("FASTRNN_COMPILE_AHEAD", "0")
