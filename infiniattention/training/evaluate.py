"""Streamed evaluation: the whole split (or a capped prefix) with the memory carried across calls."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from data_utils.iterators import LMOrderedIterator
from data_utils.vocab import Vocab

from ..model import InfiniTransformerLM
from . import checkpoint as ckpt_io
from .config import RunConfig, config_from_dict
from .distributed import DistEnv, all_reduce_sum

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def precision_autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for `bf16`/`fp16` (the model keeps its memory state in float32); nothing for `fp32`."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


@dataclass
class EvalResult:
    """Mean NLL (nats) over `tokens` targets, and the settings that produced it."""

    nll: float
    tokens: int
    batch_size: int
    tgt_len: int


@torch.no_grad()
def evaluate(
    model: InfiniTransformerLM,
    data: np.ndarray,
    *,
    batch_size: int,
    tgt_len: int,
    device: torch.device,
    max_tokens: int | None = None,
    env: DistEnv | None = None,
    autocast: contextlib.AbstractContextManager | None = None,
) -> EvalResult:
    """Stream `data` as `batch_size` lanes of `tgt_len`-token calls, each lane with its own memory.

    Under DDP the lanes are shared among ranks when `batch_size` divides by the world size; otherwise
    rank 0 evaluates them all. Sums are all-reduced, so every rank returns the same result. With
    `max_tokens` the stream stops after the first call that reaches that many targets.
    """
    world = env.world_size if env is not None else 1
    rank = env.rank if env is not None else 0
    shard = batch_size % world == 0
    total = torch.zeros(2, dtype=torch.float64, device=device)  # [sum of nll, number of targets]
    if shard or rank == 0:
        it = LMOrderedIterator(
            data, batch_size, tgt_len, rank=rank if shard else 0, world_size=world if shard else 1,
            device=device,
        )
        was_training = model.training
        model.eval()
        state = model.init_state(it.local_batch_size, device)
        done = 0
        for x, y in it:
            with autocast or contextlib.nullcontext():
                out = model(x, targets=y, state=state)
            state = out.state
            total[0] += out.nll.double().sum()
            total[1] += y.numel()
            done += y.size(1) * batch_size  # global targets, the same count on every rank
            if max_tokens is not None and done >= max_tokens:
                break
        model.train(was_training)
    all_reduce_sum(total)
    tokens = int(total[1].item())
    return EvalResult(nll=total[0].item() / max(tokens, 1), tokens=tokens, batch_size=batch_size,
                      tgt_len=tgt_len)


def load_for_inference(
    path: str, device: torch.device | str = "cpu"
) -> tuple[InfiniTransformerLM, Vocab, RunConfig, dict[str, Any]]:
    """Model (eval mode), vocabulary and config of a checkpoint, all taken from the file itself."""
    ckpt = ckpt_io.load(path, map_location="cpu")
    try:
        cfg = config_from_dict(ckpt["config"])
        model = InfiniTransformerLM(cfg.model)
        model.load_state_dict(ckpt["model"])
        vocab = Vocab.from_dict(ckpt["vocab"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # a damaged or hand-edited file
        raise ckpt_io.CheckpointError(f"checkpoint {path} is inconsistent ({type(err).__name__}: "
                                      f"{str(err)[:200]})") from err
    model.to(device).eval()
    return model, vocab, cfg, ckpt
