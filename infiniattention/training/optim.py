"""Optimizer with parameter groups, and the learning rate as a pure function of the step."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, then cosine or constant.

    A pure function of the step, so resuming needs no scheduler state (nanoGPT's approach).
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    decay_steps = cfg.decay_steps or max_steps
    if step >= decay_steps:
        return cfg.eta_min
    span = max(1, decay_steps - cfg.warmup_steps)
    progress = (step - cfg.warmup_steps) / span
    return cfg.eta_min + 0.5 * (cfg.lr - cfg.eta_min) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Three groups: decayed weights; norms, biases and the memory's write gates (no decay); the gates
    b of eq. 10 (no decay, `gate_lr_mult`). A decayed write gate would pull every token's write
    strength towards the same value, the opposite of what it is for.

    Every group carries `lr_mult`, by which `lr_at` is scaled when the trainer sets the learning rate.
    """
    decay, no_decay, gates = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith(".attn.gate"):
            gates.append(p)
        elif p.dim() < 2 or "norm" in name or name.endswith("bias") or ".attn.write_gate." in name:
            no_decay.append(p)  # includes the xl r_w_bias / r_r_bias
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_mult": 1.0, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lr_mult": 1.0, "name": "no_decay"},
        {"params": gates, "weight_decay": 0.0, "lr_mult": cfg.gate_lr_mult, "name": "gate"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or Adafactor over `param_groups(model, cfg)`."""
    groups = param_groups(model, cfg)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    return torch.optim.Adafactor(groups, lr=cfg.lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to `lr * lr_mult`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
