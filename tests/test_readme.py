"""The README's usage example runs as written (a new user's first step)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs(capsys):
    text = README.read_text()
    usage = text[text.index("## Usage"):]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    namespace = {}
    exec(compile(code, "README usage", "exec"), namespace)
    assert namespace["h"].shape == (16, 100, 128)
    assert float(capsys.readouterr().out) < 1e-5  # printed max |h - h_ref|
