"""Priors on the write gate (eq. 10's `beta`, `model.write_gate`), added to the training loss.

A gate that writes the haystack at 0.05 still adds 5x10^4 writes against one key over 1M tokens, and
the read's normaliser (eq. 7's `z`) grows with them. Two priors push writes towards zero where the loss
does not need them (docs/passkey.md, "Holding to 1M"):

- ``penalty``: an L1 prior on the gate, `penalty * mean(sigmoid(logit))`. Its gradient vanishes with
  the gate (`sigmoid'` -> 0), so it stops pushing near 1e-2 and cannot reach 1e-4.
- ``logit_penalty``: a prior on the gate's logits above a floor, `logit_penalty * mean(max(logit -
  floor, 0))`. Its gradient is the same at every logit above the floor, so a gate the task does not
  need goes on falling until sigmoid(floor) (6e-6 at the default floor -12): a write that reaches zero.

The gate itself is unchanged (a sigmoid of a linear map); only the loss differs, so evaluation, the
memory's equations and checkpoints are the same with or without a prior.
"""

from __future__ import annotations

import torch
from torch import nn


class WriteGatePrior:
    """Collects the priors of every write gate's training forwards; `take()` returns their mean (one
    per forward of a layer) and clears them, for the loss of the micro-batch that made them.

    Forward hooks on each layer's `write_gate` (an `nn.Linear` whose output is the gate's logit per
    head). Forwards without gradients (validation, evaluation) add nothing."""

    def __init__(self, model: nn.Module, *, penalty: float = 0.0, logit_penalty: float = 0.0,
                 floor: float = -12.0, logit_from: int = 0) -> None:
        self.penalty, self.logit_penalty, self.floor = penalty, logit_penalty, floor
        self.logit_from = logit_from  # the logit prior acts from this optimizer step on
        self.step = 0  # the step being trained: the trainer sets it before each step
        self._priors: list[torch.Tensor] = []
        gates = [g for b in model.blocks if (g := getattr(b.attn, "write_gate", None)) is not None]
        if not gates:
            raise ValueError("a write-gate prior needs a model with write gates (model.write_gate: true)")
        self._handles = [g.register_forward_hook(self._hook) for g in gates]

    def _hook(self, module: nn.Module, args: tuple, logits: torch.Tensor) -> None:
        logit_on = bool(self.logit_penalty) and self.step >= self.logit_from
        if not torch.is_grad_enabled() or not (self.penalty or logit_on):
            return
        logits = logits.float()
        prior = self.penalty * torch.sigmoid(logits).mean() if self.penalty else logits.new_zeros(())
        if logit_on:
            prior = prior + self.logit_penalty * (logits - self.floor).clamp_min(0.0).mean()
        self._priors.append(prior)

    def take(self) -> torch.Tensor | None:
        """The mean prior of the forwards since the last call (None when there were none)."""
        if not self._priors:
            return None
        prior = torch.stack(self._priors).mean()
        self._priors.clear()
        return prior

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
