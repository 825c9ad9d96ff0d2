"""Streamed evaluation: the whole split (or a capped prefix) with the memory carried across calls."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from data_utils.corpus import Corpus, DataError, get_corpus
from data_utils.fingerprint import changed, short
from data_utils.iterators import LMOrderedIterator
from data_utils.textfile import encode_file, infer_protocol
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
    """Mean NLL (nats) over `tokens` targets, and the settings that produced it.

    `segment_nll[i]` is the mean NLL of the targets in the `i`-th segment after the last memory reset
    (or the start of the lane; with `index_every = P`, of segments `i, i + P, i + 2P, ...`), over
    `segment_tokens[i]` targets: how much a segment gains from the context that came before it.
    """

    nll: float
    tokens: int
    batch_size: int
    tgt_len: int
    reset_every: int | None = None
    segment_nll: list[float] = field(default_factory=list)
    segment_tokens: list[int] = field(default_factory=list)


def _pieces(pos: int, length: int, period: int | None) -> list[tuple[int, int]]:
    """Cut the targets ``[pos, pos + length)`` of a call at the multiples of ``period`` (the resets):
    ``(offset in the call, piece length)`` pairs."""
    if period is None:
        return [(0, length)]
    out, start = [], pos
    while start < pos + length:
        stop = min(pos + length, (start // period + 1) * period)
        out.append((start - pos, stop - start))
        start = stop
    return out


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
    reset_every: int | None = None,
    index_every: int | None = None,
) -> EvalResult:
    """Stream `data` as `batch_size` lanes of `tgt_len`-token calls, each lane with its own memory.

    Under DDP the lanes are shared among ranks when `batch_size` divides by the world size; otherwise
    rank 0 evaluates them all. Each lane's sums are gathered exactly (a lane is computed by one rank,
    the others add zeros) and summed in lane order, so every rank returns the same result, and the
    same as one process. With `max_tokens` the stream stops after the first call that reaches that
    many targets. With `reset_every = K` every lane's long-term memory (compressive memory or xl cache)
    is reset to a fresh state every `K` segments (`K = 1`: each segment sees only itself); calls are cut
    at the reset points, which does not change the results (the memory is carried across calls).
    `index_every` (default `reset_every`) sets the period of the by-segment-index sums.
    """
    for name, value in (("reset_every", reset_every), ("index_every", index_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer (segments), got {value!r}")
    index_every = index_every or reset_every
    world = env.world_size if env is not None else 1
    rank = env.rank if env is not None else 0
    shard = batch_size % world == 0
    N = model.config.segment_len
    period = reset_every * N if reset_every is not None else None
    lane_targets = len(data) // batch_size - 1
    n_index = max(1, -(-lane_targets // N))
    if index_every is not None:
        n_index = min(n_index, index_every)
    # Per global lane: [sum of nll, number of targets] and the same by segment index since the reset.
    lane_sums = torch.zeros(batch_size, 2, dtype=torch.float64, device=device)
    seg_sums = torch.zeros(batch_size, n_index, 2, dtype=torch.float64, device=device)
    if shard or rank == 0:
        it = LMOrderedIterator(
            data, batch_size, tgt_len, rank=rank if shard else 0, world_size=world if shard else 1,
            device=device,
        )
        first = (rank if shard else 0) * it.local_batch_size
        lanes = slice(first, first + it.local_batch_size)
        was_training = model.training
        model.eval()
        state = model.init_state(it.local_batch_size, device)
        done = pos = 0
        for x, y in it:
            for offset, length in _pieces(pos, x.size(1), period):
                if period is not None and (pos + offset) % period == 0 and pos + offset > 0:
                    state = model.init_state(it.local_batch_size, device)  # a fresh memory: the reset
                xs, ys = x[:, offset : offset + length], y[:, offset : offset + length]
                with autocast or contextlib.nullcontext():
                    out = model(xs, targets=ys, state=state)
                state = out.state
                nll = out.nll.double()  # [b, length]
                lane_sums[lanes, 0] += nll.sum(dim=1)
                lane_sums[lanes, 1] += length
                p = pos + offset + torch.arange(length, device=device)
                index = (p // N) % index_every if index_every is not None else p // N
                seg_sums[lanes, :, 0].index_add_(1, index, nll)
                seg_sums[lanes, :, 1].index_add_(1, index, torch.ones_like(nll))
            pos += x.size(1)
            done += y.size(1) * batch_size  # global targets, the same count on every rank
            if max_tokens is not None and done >= max_tokens:
                break
        model.train(was_training)
    all_reduce_sum(lane_sums)  # exact: every lane is non-zero on one rank only
    all_reduce_sum(seg_sums)
    total = lane_sums.sum(dim=0)
    by_seg = seg_sums.sum(dim=0)  # [n_index, 2]
    tokens = int(total[1].item())
    seen = by_seg[:, 1] > 0  # a capped stream (max_tokens) reaches few of a long file's segments
    counts = by_seg[seen, 1]
    return EvalResult(
        nll=total[0].item() / max(tokens, 1), tokens=tokens, batch_size=batch_size, tgt_len=tgt_len,
        reset_every=reset_every, segment_nll=(by_seg[seen, 0] / counts).tolist(),
        segment_tokens=counts.long().tolist(),
    )


# Evaluation-time overrides of the model config: field -> the memory settings they apply to.
EVAL_OVERRIDES = {
    "mem_len": "memory xl",
    "same_length": "memory xl",
    "clamp_len": "xl relative positions (memory xl, or model.pos xl)",
}


def apply_eval_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """The config with Transformer-XL's evaluation-time settings (`mem_len`, `clamp_len`,
    `same_length`) replaced. None values are left as they are. A setting that the checkpoint's
    memory mode does not have is a ValueError, never silently ignored."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    for name in changes:
        if name not in EVAL_OVERRIDES:
            raise ValueError(f"{name} cannot be overridden at evaluation; valid: {', '.join(EVAL_OVERRIDES)}")
        applies = cfg.model.pos == "xl" if name == "clamp_len" else cfg.model.memory == "xl"
        if not applies:
            raise ValueError(
                f"--{name.replace('_', '-')} applies to checkpoints with {EVAL_OVERRIDES[name]}; this one "
                f"has memory {cfg.model.memory}, pos {cfg.model.pos}"
            )
    if not changes:
        return cfg
    model = replace(cfg.model, **changes)  # __post_init__ validates the new values
    return replace(cfg, model=model)


def _inconsistent(path: str, err: Exception) -> ckpt_io.CheckpointError:
    return ckpt_io.CheckpointError(
        f"checkpoint {path} is inconsistent ({type(err).__name__}: {str(err)[:200]})"
    )


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_for_inference(
    path: str, device: torch.device | str = "cpu", overrides: dict[str, Any] | None = None
) -> tuple[InfiniTransformerLM, Vocab, RunConfig, dict[str, Any]]:
    """Model (eval mode), vocabulary and config of a checkpoint, all taken from the file itself;
    `overrides`: evaluation-time settings, see `apply_eval_overrides`. The checkpoint is verified
    (`checkpoint.verify`); the notice about one without a digest is a `warning:` line on stderr."""
    ckpt = ckpt_io.load(path, map_location="cpu", notice=_warn)
    damaged = (KeyError, TypeError, ValueError, RuntimeError)  # a damaged or hand-edited file
    try:
        cfg = config_from_dict(ckpt["config"])
        vocab = Vocab.from_dict(ckpt["vocab"])
    except damaged as err:
        raise _inconsistent(path, err) from err
    cfg = apply_eval_overrides(cfg, overrides or {})  # outside: its ValueError names the flag
    try:
        model = InfiniTransformerLM(cfg.model)
        model.load_state_dict(ckpt["model"])
    except damaged as err:
        raise _inconsistent(path, err) from err
    model.to(device).eval()
    return model, vocab, cfg, ckpt


def load_stream(
    ckpt: dict[str, Any],
    cfg: RunConfig,
    *,
    split: str | None = None,
    text: str | None = None,
    data_dir: str | None = None,
    dataset: str | None = None,
    checkpoint: str = "the checkpoint",
    allow_data_change: bool = False,
) -> tuple[np.ndarray, str, dict[str, Any]]:
    """The token stream to score: a prepared split (default: test), or the file `text` (`-`: stdin)
    encoded with the checkpoint's own vocabulary and data protocol, unknown symbols counted and read as
    `<unk>` (word vocabularies, as the prepared splits read them) or skipped (byte and character
    vocabularies). Returns (ids, a label for messages, fields for the JSON result).

    A split of the dataset the checkpoint was trained on must be the data it recorded (its digest), unless
    `allow_data_change`: a test number on other data would be compared with the wrong ones. Another
    dataset (`dataset`) is the user's explicit choice and is not compared.
    """
    vocab = Vocab.from_dict(ckpt["vocab"])
    data_dir, dataset = data_dir or cfg.data.data_dir, dataset or cfg.data.dataset
    if text is None:
        corpus = get_corpus(data_dir, dataset)
        if corpus.vocab.digest() != ckpt["vocab_digest"]:
            raise ckpt_io.CheckpointError(
                f"{checkpoint} was trained with another vocabulary than {corpus.path}: evaluate on the "
                "dataset and protocol it was trained on"
            )
        split = split or "test"
        extra = {"dataset": corpus.name, "protocol": corpus.meta.get("protocol"), "split": split}
        changed_files = _split_changed(ckpt, corpus, split, checkpoint)
        if changed_files and not allow_data_change:
            raise DataError(f"{changed_files}: restore the data it was evaluated for, or pass "
                            "--allow-data-change to evaluate the data as it is")
        if changed_files:
            print(f"warning: --allow-data-change: {changed_files}", file=sys.stderr)
            extra["data_changed"] = changed_files
        return corpus.split(split), f"{corpus.name} {split}", extra
    if split is not None:
        raise ValueError("--text and --split exclude each other: score a file or a prepared split")
    name = "stdin" if text == "-" else text
    # The protocol of the training corpus when it is at hand (with the same vocabulary), else what
    # the vocabulary implies.
    protocol = infer_protocol(vocab)
    try:
        corpus = get_corpus(data_dir, dataset)
        if corpus.vocab.digest() == ckpt["vocab_digest"]:
            protocol = corpus.meta.get("protocol", protocol)
    except (FileNotFoundError, ValueError, DataError):
        pass
    with _open_text(text) as (source, size):
        try:
            enc = encode_file(source, vocab, protocol, name, size_hint=size)
        except OSError as err:  # a read that fails half-way (an I/O error, a pipe gone)
            what = "--text -: standard input" if text == "-" else f"--text {text}"
            raise ValueError(f"{what} cannot be read ({err.strerror or err})") from err
    if len(enc.ids) < 2:
        raise ValueError(f"{name} has {len(enc.ids)} known symbol(s): at least 2 are needed (one input, "
                         "one target)")
    extra = {"text": name, "protocol": protocol, "symbols": enc.symbols, "unknown": enc.unknown,
             "unknown_share": enc.unknown_share, "unknown_as": enc.unknown_as,
             "dropped_by_protocol": enc.dropped}
    return enc.ids, name, extra


def _split_changed(ckpt: dict[str, Any], corpus: Corpus, split: str, checkpoint: str) -> str | None:
    """What differs between split `split` of `corpus` and the record of it in `ckpt` (None: the same, a
    checkpoint of an older version without records, or another dataset than it was trained on)."""
    recorded = ckpt.get("data_files")
    name = f"{split}.npy"
    if not isinstance(recorded, dict) or name not in recorded or ckpt.get("dataset") != corpus.name:
        return None
    now = corpus.fingerprint(recorded, names=[name])
    if not changed(recorded, now):
        return None
    return (f"{corpus.path / name} differs from the data {checkpoint} was trained on "
            f"({short(recorded[name])} then, {short(now[name])} now)")


@contextlib.contextmanager
def _open_text(text: str) -> Iterator[tuple[BinaryIO, int | None]]:
    """File `text` (`-`: standard input) opened for reading in binary, and its size when known; a
    ValueError (one line) when it cannot be opened. The text is then read in chunks, never whole."""
    if text == "-":
        stream = sys.stdin
        if stream is None or stream.closed:
            raise ValueError("--text -: standard input is closed: pipe a file in (... | eval.py --text -) or "
                             "give --text FILE")
        yield stream.buffer, None
        return
    if Path(text).is_dir():
        raise ValueError(f"--text {text} is a folder: give a text file")
    try:
        f = open(text, "rb")
    except FileNotFoundError as err:
        raise ValueError(f"--text {text} not found") from err
    except OSError as err:
        raise ValueError(f"--text {text} cannot be read: {err.strerror}") from err
    with f:
        info = os.fstat(f.fileno())
        if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):  # /dev/zero would never end
            raise ValueError(f"--text {text} is a device, not a text file")
        yield f, info.st_size if stat.S_ISREG(info.st_mode) else None  # a pipe has no size
