import sys
from pathlib import Path

# helpers.py and cells.py live beside the tests; make them importable without a package.
sys.path.insert(0, str(Path(__file__).parent))
