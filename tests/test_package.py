"""The installable package: the model library stands alone, and the commands, configs and sample ship."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_model_library_imports_with_another_data_utils_first(tmp_path):
    """Transformer-XL's own `data_utils.py` (a module, not a package) first on the path must not break
    `import infiniattention`: the model library takes token ids and imports nothing from data_utils."""
    (tmp_path / "data_utils.py").write_text("CORPUS = 'a decoy, as kimiyoung/transformer-xl ships one'\n")
    code = textwrap.dedent("""
        import torch
        import data_utils
        from infiniattention import InfiniAttention, InfiniTransformerLM, ModelConfig, generate
        import infiniattention.generation

        assert data_utils.CORPUS.startswith("a decoy"), data_utils.__file__
        model = InfiniTransformerLM(ModelConfig(vocab_size=11, n_layer=1, d_model=16, n_head=2, d_head=8,
                                                d_inner=32, segment_len=4))
        new = generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=5, greedy=True)
        assert new.shape == (1, 5)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def _source_copy(dest: Path) -> Path:
    """The checkout without its environment, runs or prepared data: pip builds in the source folder,
    and its build/ and *.egg-info/ must not land in the repository while other tests run."""
    skip_top = {".git", ".venv", "runs", "build", ".pytest_cache", ".ruff_cache"}

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder)
        drop = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        if here == REPO:
            drop |= skip_top & set(names)
        if here == REPO / "data":
            drop |= set(names) - {"samples"}
        return drop

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


@pytest.mark.slow
def test_pip_install_gives_the_library_the_commands_the_configs_and_the_sample(tmp_path):
    """`pip install .` (not editable) into a fresh venv, then, from a folder outside the checkout: every
    command's --help, the bundled sample prepared, a shipped config trained by its name, and the libraries
    imported from site-packages. Offline: `--no-deps --no-build-isolation`, and torch, numpy, pip and
    setuptools are those of the running environment (`--system-site-packages` reaches the base
    interpreter's packages only, so a .pth file adds this environment's, which may itself be a venv)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    site_dir = next((venv / "lib").glob("python*/site-packages"))
    (site_dir / "running_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1")
    source = _source_copy(tmp_path / "source")
    pip = [bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)]
    proc = subprocess.run(pip, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*cmd: str) -> str:
        res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-2000:])
        return res.stdout + res.stderr

    for command in ("infini-train", "infini-eval", "infini-generate", "infini-getdata", "infini-passkey"):
        assert run(command, "--help").startswith(f"usage: {command} ")
    where = run("python", "-c", "import data_utils, infiniattention.commands; "
                "print(infiniattention.__file__, data_utils.__file__)")
    assert str(site_dir) in where and str(REPO) not in where and str(source) not in where
    run("infini-getdata", "enwik8-sample", "--no-progress")
    assert (work / "data" / "enwik8-sample" / "train.npy").is_file()
    sets = ["train.max_steps=2", "train.eval_interval=0", "eval.max_tokens=64", "eval.test_max_tokens=64",
            "train.device=cpu"]
    out = run("infini-train", "--config", "tiny", "--no-progress", *(a for s in sets for a in ("--set", s)))
    assert "test step 2" in out and (work / "runs" / "tiny" / "ckpt_00000002.pt").is_file()
    assert run("infini-generate", "--checkpoint", "runs/tiny/best.pt", "--prompt", "The ",
               "--max-new-tokens", "5").startswith("The ")
