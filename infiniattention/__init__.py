"""Infini-attention language models (Munkhdalai et al. 2024, arXiv 2404.07143)."""

from .attention import AttentionState, InfiniAttention
from .config import ModelConfig
from .memory import CompressiveMemory, MemoryState

__all__ = ["AttentionState", "CompressiveMemory", "InfiniAttention", "MemoryState", "ModelConfig"]
