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


def test_readme_byte_level_walk_runs(tmp_path, capsys):
    """"Your own text", byte level, as the README words it: getdata.sh text without --protocol words, then
    `train.py --config tiny` (shrunk here to two steps), eval.py and generate.py on the result."""
    import eval as eval_cli
    import train
    from data_utils.prepare import main as getdata

    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert ("`bash getdata.sh text --train my/train.txt --valid my/valid.txt --test my/test.txt --name "
            "mybytes`, then `python train.py --config tiny --set data.dataset=mybytes --run-dir "
            "runs/mybytes`") in readme
    text = (REPO / "data" / "samples" / "wiki.valid.tokens").read_bytes()
    my = tmp_path / "my"
    my.mkdir()
    parts = {"train": (0, 60_000), "valid": (60_000, 70_000), "test": (70_000, 80_000)}
    for name, (start, stop) in parts.items():
        (my / f"{name}.txt").write_bytes(text[start:stop])
    data = str(tmp_path / "data")
    assert getdata(["text", "--train", str(my / "train.txt"), "--valid", str(my / "valid.txt"), "--test",
                    str(my / "test.txt"), "--name", "mybytes", "--data-dir", data]) == 0
    run = tmp_path / "runs" / "mybytes"
    sets = ["data.dataset=mybytes", f"data.data_dir={data}", "train.max_steps=2", "train.eval_interval=0",
            "eval.max_tokens=512", "eval.test_max_tokens=512", "train.device=cpu", "model.n_layer=1"]
    assert train.main(["--config", "tiny", "--run-dir", str(run), "--no-progress",
                       *(a for s in sets for a in ("--set", s))]) == 0
    ckpt = str(run / "best.pt")
    assert eval_cli.main(["--checkpoint", ckpt, "--split", "test", "--max-tokens", "512"]) == 0
    assert "mybytes test: bpc" in capsys.readouterr().out
    generate = [sys.executable, "scripts/generate.py", "--checkpoint", ckpt, "--prompt", "The history of",
                "--max-new-tokens", "10"]
    proc = subprocess.run(generate, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.startswith("The history of"), proc.stderr
