"""Streaming decoding: prefill a prompt of any length, then one token at a time.

The model's state is the KV cache: the keys/values of the current segment are kept until the segment
fills, then written into the compressive memory (eq. 8/9) and dropped, so memory use is bounded
however long generation runs (the xl baseline keeps at most ``mem_len + segment_len`` hidden states).

The model library works on token ids only: turning ids into text is the vocabulary's job
(`data_utils.vocab.TextStream`), so `import infiniattention` needs nothing from `data_utils`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .model import InfiniTransformerLM, ModelState


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError for settings that do not define a distribution."""
    if not temperature >= 0:  # also catches NaN
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick the next token of each row of ``logits [B, V]`` -> ``[B]``.

    ``top_k`` keeps the k most likely tokens; ``top_p`` keeps the smallest set whose probability
    reaches p (nucleus sampling; the most likely token is always kept).
    """
    check_sampling(temperature, top_k, top_p)
    if greedy or temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _decode(
    model: InfiniTransformerLM,
    prompt: Tensor,
    max_new_tokens: int,
    state: ModelState | None,
    sampling: dict,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(token [B], the logits it was drawn from [B, V]) for each new token; only the model state and
    the current logits are held, so memory stays constant however many tokens are generated."""
    if prompt.dim() != 2 or prompt.size(1) < 1:
        raise ValueError(f"expected a prompt of shape [batch, length >= 1], got {tuple(prompt.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_sampling(sampling["temperature"], sampling["top_k"], sampling["top_p"])
    was_training = model.training
    model.eval()
    try:
        # no_grad around each call, never across a yield (it would leak into the caller's code)
        with torch.no_grad():
            out = model(prompt, state=state)  # prefill: all segments of the prompt in one call
        logits, state = out.logits[:, -1], out.state
        for i in range(max_new_tokens):
            token = sample_next(logits, **sampling)
            yield token, logits
            if i + 1 < max_new_tokens:
                with torch.no_grad():
                    out = model(token[:, None], state=state)
                logits, state = out.logits[:, -1], out.state
    finally:
        model.train(was_training)


def generate_stream(
    model: InfiniTransformerLM,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    state: ModelState | None = None,
) -> Iterator[Tensor]:
    """Continue ``prompt [B, P]`` one token at a time: yields each new token ``[B]`` as soon as it is
    drawn, keeping nothing of earlier steps (constant memory, for generations of any length)."""
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, generator=generator)
    for token, _ in _decode(model, prompt, max_new_tokens, state, sampling):
        yield token


def generate(
    model: InfiniTransformerLM,
    prompt: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    state: ModelState | None = None,
    return_logits: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Continue ``prompt [B, P]`` (P >= 1) by ``max_new_tokens`` tokens -> ``[B, max_new_tokens]``.

    ``state`` continues an earlier stream. With ``return_logits`` also returns the log-probabilities
    each new token was drawn from, ``[B, max_new_tokens, V]`` (kept only then). The model is put in eval
    mode for the call and restored afterwards.
    """
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, generator=generator)
    tokens, all_logits = [], []
    for token, logits in _decode(model, prompt, max_new_tokens, state, sampling):
        tokens.append(token)
        if return_logits:
            all_logits.append(logits)
    new = torch.stack(tokens, dim=1) if tokens else prompt.new_zeros(prompt.size(0), 0)
    if return_logits:
        V = model.config.vocab_size
        stacked = torch.stack(all_logits, dim=1) if all_logits else prompt.new_zeros(prompt.size(0), 0, V)
        return new, stacked
    return new


def __getattr__(name: str):
    # `TextStream` lived here; it is the vocabulary's now. Imported on first use only, so the model library
    # still needs nothing from data_utils (another top-level `data_utils` may come first on the path).
    if name == "TextStream":
        from data_utils.vocab import TextStream

        return TextStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
