"""The installable package: the model library stands alone, and the commands, configs and sample ship."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
