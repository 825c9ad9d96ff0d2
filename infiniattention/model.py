"""InfiniTransformerLM: Transformer-XL with its segment recurrence replaced by Infini-attention.

Token embedding scaled by sqrt(d_model) (Transformer-XL), embedding dropout, ``n_layer`` blocks of
attention + position-wise FFN with residuals (post-LN by default, ``pre_lnorm`` optional), an output
layer tied to the embedding (adaptive softmax for word-level vocabularies). The attention of every
block is an :class:`InfiniAttention` in one of three memory modes (infini, xl, none) so baselines
share every other line of code.

State is explicit (DESIGN.md §3): ``forward`` takes a :class:`ModelState` and returns the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .adaptive import AdaptiveEmbedding, ProjectedAdaptiveLogSoftmax
from .attention import AttentionState, InfiniAttention
from .config import ModelConfig
from .dropout import use_fast_dropout


@dataclass
class ModelState:
    """Per-layer attention states of ``batch_size`` lanes that advance in lockstep."""

    layers: list[AttentionState]

    @property
    def seen(self) -> int:
        """Tokens consumed per lane since the state was created."""
        return self.layers[0].seen

    @property
    def batch_size(self) -> int:
        return self.layers[0].batch_size

    def map(self, fn: Callable[[Tensor], Tensor]) -> ModelState:
        return ModelState([layer.map(fn) for layer in self.layers])

    def detach(self) -> ModelState:
        """Cut the graph: the next step's backward stops here (Transformer-XL's carried cache)."""
        return self.map(Tensor.detach)

    def to(self, device: torch.device | str) -> ModelState:
        return self.map(lambda t: t.to(device))

    def reset(self, lanes: Tensor) -> ModelState:
        """Zero the long-term memory of the lanes where ``lanes [B]`` is True (new documents)."""
        if lanes.shape != (self.batch_size,):
            raise ValueError(f"expected a lane mask of shape [{self.batch_size}], got {tuple(lanes.shape)}")
        return ModelState([layer.reset(lanes) for layer in self.layers])

    def select_lanes(self, start: int, stop: int) -> ModelState:
        """Lanes ``[start, stop)``: one rank's share of a gathered state."""
        return self.map(lambda t: t[start:stop])

    @classmethod
    def cat_lanes(cls, states: Sequence[ModelState]) -> ModelState:
        """Concatenate the lanes of several states (e.g. of every rank, in rank order)."""
        if len({s.seen for s in states}) != 1:
            raise ValueError("states to concatenate must have consumed the same number of tokens")
        layers = []
        for per_layer in zip(*(s.layers for s in states), strict=True):
            names = per_layer[0].tensors().keys()
            tensors = {n: torch.cat([layer.tensors()[n] for layer in per_layer]) for n in names}
            layers.append(AttentionState.from_tensors(per_layer[0].seen, tensors))
        return cls(layers)

    def state_dict(self) -> dict[str, Tensor]:
        """Plain tensors for checkpoints: ``seen`` and batch-first ``layers.{i}.{name}``."""
        out = {"seen": torch.tensor(self.seen, dtype=torch.int64)}
        for i, layer in enumerate(self.layers):
            out.update({f"layers.{i}.{name}": t for name, t in layer.tensors().items()})
        return out

    @classmethod
    def from_state_dict(cls, d: dict[str, Tensor]) -> ModelState:
        seen = int(d["seen"])
        per_layer: dict[int, dict[str, Tensor]] = {}
        for key, t in d.items():
            if key == "seen":
                continue
            _, i, name = key.split(".")
            per_layer.setdefault(int(i), {})[name] = t
        return cls([AttentionState.from_tensors(seen, per_layer[i]) for i in sorted(per_layer)])


class WriteGateTap:
    """The mean write gate ``beta`` of every layer over the tokens the model reads while the tap is
    open (forward hooks on each layer's write gate; nothing is recorded for a model without one).

        with WriteGateTap(model) as tap:
            model(tokens, state=state)
        tap.means()  # {layer: mean beta}
    """

    def __init__(self, model: InfiniTransformerLM) -> None:
        self.model = model
        self.sums: dict[int, float] = {}
        self.counts: dict[int, int] = {}
        self._hooks: list = []

    def __enter__(self) -> WriteGateTap:
        for i, block in enumerate(self.model.blocks):
            gate = getattr(block.attn, "write_gate", None)
            if gate is not None:
                self._hooks.append(gate.register_forward_hook(self._record(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _record(self, layer: int) -> Callable:
        def hook(module: nn.Module, args: tuple, logits: Tensor) -> None:
            beta = torch.sigmoid(logits.detach().float())
            self.sums[layer] = self.sums.get(layer, 0.0) + float(beta.sum())
            self.counts[layer] = self.counts.get(layer, 0) + beta.numel()
        return hook

    def means(self) -> dict[int, float]:
        return {i: self.sums[i] / self.counts[i] for i in sorted(self.sums) if self.counts[i]}


@dataclass
class LMOutput:
    """``loss``: mean NLL (nats); ``nll [B, T]``; ``logits [B, T, V]`` (log-probabilities) when
    asked for; ``state``: the next state (graph attached: detach it between steps)."""

    loss: Tensor | None
    nll: Tensor | None
    logits: Tensor | None
    state: ModelState


class PositionwiseFF(nn.Module):
    """Transformer FFN: ``W2 drop(act(W1 x))``."""

    def __init__(self, d_model: int, d_inner: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Attention + FFN with residuals; post-LN (Transformer-XL) or pre-LN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn = InfiniAttention(
            cfg.d_model, cfg.n_head, cfg.d_head, cfg.segment_len, update=cfg.update, pos=cfg.pos,
            dropatt=cfg.dropatt, gate_init=cfg.gate_init, eps=cfg.eps, memory=cfg.memory,
            mem_len=cfg.mem_len if cfg.memory == "xl" else 0, clamp_len=cfg.clamp_len,
            same_length=cfg.same_length, pos_dropout=cfg.dropout, own_xl_bias=cfg.untie_r,
            normalizer=cfg.normalizer, feature=cfg.feature, key_norm=cfg.key_norm, write_gate=cfg.write_gate,
        )
        self.ff = PositionwiseFF(cfg.d_model, cfg.d_inner, cfg.dropout, cfg.activation)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.pre_lnorm = cfg.pre_lnorm

    def forward(self, h: Tensor, state: AttentionState,
                xl_bias: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, AttentionState]:
        if self.pre_lnorm:
            a, state = self.attn(self.norm1(h), state, xl_bias)
            h = h + self.drop(a)
            return h + self.ff(self.norm2(h)), state
        a, state = self.attn(h, state, xl_bias)
        h = self.norm1(h + self.drop(a))
        return self.norm2(h + self.ff(h)), state


class InfiniTransformerLM(nn.Module):
    """The language model of DESIGN.md §3; see the module docstring."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = cfg = config
        cutoffs = list(cfg.cutoffs) if cfg.adaptive else []
        div_val = cfg.div_val if cfg.adaptive else 1
        self.embed = AdaptiveEmbedding(cfg.vocab_size, cfg.d_model, cutoffs, div_val, init_std=cfg.init_std)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        if cfg.pos == "xl" and not cfg.untie_r:
            # Transformer-XL's u, v: one pair shared by every layer (kimiyoung/transformer-xl default).
            self.r_w_bias = nn.Parameter(torch.empty(cfg.n_head, cfg.d_head).normal_(std=0.02))  # u
            self.r_r_bias = nn.Parameter(torch.empty(cfg.n_head, cfg.d_head).normal_(std=0.02))  # v
        self.final_norm = nn.LayerNorm(cfg.d_model) if cfg.pre_lnorm else nn.Identity()
        self.head = ProjectedAdaptiveLogSoftmax(
            cfg.vocab_size, cfg.d_model, cutoffs, div_val,
            tie_to=self.embed if cfg.tie_weights else None, init_std=cfg.init_std,
        )
        for block in self.blocks:
            for module in block.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=cfg.init_std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
        if cfg.fast_dropout:
            use_fast_dropout(self)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> ModelState:
        """A fresh state for ``batch_size`` lanes: empty memories, nothing cached."""
        return ModelState([block.attn.init_state(batch_size, device) for block in self.blocks])

    def forward(
        self,
        tokens: Tensor,
        targets: Tensor | None = None,
        state: ModelState | None = None,
        return_logits: bool | None = None,
    ) -> LMOutput:
        """``tokens [B, T]`` (any ``T``) continue the streams of ``state``.

        With ``targets [B, T]`` the per-token NLL and its mean are returned; logits (normalised
        log-probabilities ``[B, T, V]``) only when ``targets`` is None or ``return_logits`` is True,
        so a loss-only call with an adaptive softmax never builds ``[B, T, V]``.
        """
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"expected integer tokens of shape [batch, time], got {tuple(tokens.shape)} "
                             f"{tokens.dtype}")
        if targets is not None and targets.shape != tokens.shape:
            raise ValueError(f"targets {tuple(targets.shape)} must have the shape of tokens "
                             f"{tuple(tokens.shape)}")
        B = tokens.size(0)
        if state is None:
            state = self.init_state(B, tokens.device)
        elif len(state.layers) != len(self.blocks) or state.batch_size != B:
            raise ValueError(f"expected a state of {len(self.blocks)} layers and {B} lanes, got "
                             f"{len(state.layers)} layers and {state.batch_size} lanes")
        h = self.drop(self.embed(tokens))  # [B, T, d_model]
        next_layers = []
        use_ckpt = self.config.checkpoint_segments and self.training and torch.is_grad_enabled()
        xl_bias = (self.r_w_bias, self.r_r_bias) if hasattr(self, "r_w_bias") else None
        for block, layer_state in zip(self.blocks, state.layers, strict=True):
            if use_ckpt:
                h, layer_state = checkpoint(block, h, layer_state, xl_bias, use_reentrant=False)
            else:
                h, layer_state = block(h, layer_state, xl_bias)
            next_layers.append(layer_state)
        h = self.drop(self.final_norm(h))
        loss = nll = logits = None
        if targets is not None:
            nll = self.head(h, targets)  # [B, T]
            loss = nll.mean()
        if targets is None or return_logits:
            logits = self.head.log_prob(h)  # [B, T, V]
        return LMOutput(loss, nll, logits, ModelState(next_layers))

    def gate_values(self) -> Tensor | None:
        """``sigmoid(b)`` of every head, ``[n_layer, n_head]`` (eq. 10); None without a memory."""
        if self.config.memory != "infini":
            return None
        return torch.stack([torch.sigmoid(block.attn.gate.detach().float()) for block in self.blocks])

    def memory_stats(self, state: ModelState) -> dict[str, float]:
        """Per-layer summaries of the compressive memory, for logging."""
        stats = {}
        for i, layer in enumerate(state.layers):
            if layer.memory is not None:
                stats[f"layer{i}/M_abs_mean"] = layer.memory.M.detach().abs().mean().item()
                stats[f"layer{i}/z_mean"] = layer.memory.z.detach().mean().item()
        return stats

    def num_parameters(self) -> int:
        """Parameters counted once (tied weights are shared)."""
        return sum(p.numel() for p in self.parameters())

