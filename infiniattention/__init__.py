"""Infini-attention language models (Munkhdalai et al. 2024, arXiv 2404.07143)."""

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
