"""The README's Python snippets run as written.

Every ```python block of README.md runs in its own fresh process, from an empty temporary folder (not the
repository root, so nothing is imported from the working directory), with only the repository on
PYTHONPATH: the modules that `pip install .` puts on the path (`infiniattention`, `data_utils`), without
building a wheel per test run; tests/test_package.py checks a real `pip install .`. A block must
therefore be self-contained: it defines every name it uses. A block whose first line is the comment
`# not run` is skipped (for a fragment that only illustrates). The test holds for any README.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OPT_OUT = "# not run"


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks, in order."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", markdown, flags=re.MULTILINE | re.DOTALL)


BLOCKS = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))


def test_blocks_are_found():
    assert python_blocks("text\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n```\n") == [
        "x = 1\n", "y = 2\n"]
    assert BLOCKS, "README.md has no ```python block"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i + 1}")
def test_readme_python_block_runs(index, tmp_path):
    code = BLOCKS[index]
    if code.lstrip().startswith(OPT_OUT):
        pytest.skip(f"marked '{OPT_OUT}'")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"README python block {index + 1} failed:\n{code}\n{proc.stderr[-3000:]}"
