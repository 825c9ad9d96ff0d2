"""Infini-attention language models (Munkhdalai et al. 2024, arXiv 2404.07143)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .attention import AttentionState, InfiniAttention
    from .config import ModelConfig
    from .generation import generate
    from .memory import CompressiveMemory, MemoryState
    from .model import InfiniTransformerLM, LMOutput, ModelState

__all__ = [
    "AttentionState",
    "CompressiveMemory",
    "InfiniAttention",
    "InfiniTransformerLM",
    "LMOutput",
    "MemoryState",
    "ModelConfig",
    "ModelState",
    "generate",
]

# The names above are imported on first use (`from infiniattention import InfiniAttention` works as
# always): the programs in infiniattention.commands start by importing torch under a guard
# (data_utils.startup), which `import infiniattention` must not have done before them.
_LAZY = {
    "AttentionState": ".attention", "InfiniAttention": ".attention", "ModelConfig": ".config",
    "generate": ".generation", "CompressiveMemory": ".memory", "MemoryState": ".memory",
    "InfiniTransformerLM": ".model", "LMOutput": ".model", "ModelState": ".model",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
