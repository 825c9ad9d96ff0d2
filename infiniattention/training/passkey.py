"""Passkey retrieval through the normal trainer, and streamed retrieval of a single instance.

`PasskeyTrainer` is the `Trainer` (checkpoints, exact resume, TensorBoard, DDP, signals all unchanged)
with three hooks filled in: its batch source yields passkey instances mixed with ordinary text
(`data_utils.passkey.PasskeyBatches`), every lane starts a new document so the memory is reset before
every batch (with `passkey.state_passing`, only the lanes whose draw says so: the others carry their
memory, detached, into the next instance, and the carried memories are part of every checkpoint as
any trainer's state is), and the loss is the mean NLL of the answer digits (+ `all_weight` x the mean
NLL of every target; the write-gate priors `write_penalty` and `write_logit_penalty` of
training/gate_prior.py join its gradient, not the logged loss). Validation
scores held-out instances at the training length (teacher-forced answer NLL and digit accuracy);
`best.pt` is the step with the lowest answer NLL. Checkpoints record the `passkey` section, and a resume
with other passkey settings is refused naming each key, as one with another architecture is: every key
changes the training stream, the loss or the validation that ranks best.pt.

`retrieve` streams instances (any length, one chunk at a time, the state carried) and decodes the five
digits greedily: the test of the paper's §4.2 as `scripts/passkey.py eval` runs it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from data_utils.passkey import (
    N_DIGITS,
    Haystack,
    PasskeyBatches,
    PasskeyInstance,
    PasskeyTaskConfig,
    PasskeyTokens,
    answer_mask,
    make_instance,
)

from ..model import InfiniTransformerLM, LMOutput, ModelState, WriteGateTap
from . import checkpoint as ckpt_io
from .config import ConfigError, RunConfig, section_kwargs
from .gate_prior import WriteGatePrior
from .trainer import Trainer

VAL_SEED_OFFSET = 1_000_003  # held-out instances never share a seed with the training lanes


class PasskeyTrainer(Trainer):
    """`Trainer` on passkey batches with the answer-digit loss (see the module docstring)."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, task: PasskeyTaskConfig, *,
                 init_from: str | None = None, **kwargs: Any) -> None:
        self.task = task
        self._answer: torch.Tensor | None = None
        self._copy: torch.Tensor | None = None
        self._answer_nll = [0.0, 0]  # sum and count since the last log line
        self._ages: list[int] = []  # the memory's age at each question since the last log line
        for name in ("write_penalty", "write_logit_penalty"):
            if getattr(task, name) and not cfg.model.write_gate:
                raise ConfigError(f"passkey.{name} needs model.write_gate: true (it acts on the write gate)")
        if (task.write_penalty or task.write_logit_penalty) and cfg.train.write_logit_penalty:
            raise ConfigError("the write-gate prior is set twice (passkey.write_penalty or "
                              "passkey.write_logit_penalty, and train.write_logit_penalty): set it in one")
        if task.state_passing:
            if cfg.model.memory != "infini":
                raise ConfigError("passkey.state_passing carries the compressive memory: it needs "
                                  f"model.memory infini, got {cfg.model.memory}")
            if cfg.data.tgt_len % cfg.model.segment_len:
                raise ConfigError(f"passkey.state_passing needs data.tgt_len ({cfg.data.tgt_len}) to be a "
                                  f"multiple of model.segment_len ({cfg.model.segment_len}), so that every "
                                  "instance starts a segment")
        super().__init__(cfg, run_dir, **kwargs)
        if init_from and self.step == 0:
            try:
                self._init_weights(init_from)
            except BaseException:
                self.close()  # give the run folder back (the caller may start another run in this process)
                raise

    def _init_weights(self, init_from: str) -> None:
        ckpt = ckpt_io.load(init_from, map_location="cpu")
        ckpt_io.check_compatible(ckpt, self.model.config.__dict__, self.vocab.digest(), Path(init_from))
        self.model.load_state_dict(ckpt["model"])
        self.log.info("initialised the weights from %s (step %d); optimizer and step start afresh",
                      init_from, int(ckpt["step"]))

    def _check_compatible(self, ckpt: dict[str, Any], path: Path) -> None:
        """The architecture and vocabulary (`Trainer`), and the passkey settings the checkpoint was
        trained with; a checkpoint of an older version, which does not record them, is compared with the
        run folder's passkey.yaml when it lies in that folder."""
        super()._check_compatible(ckpt, path)
        saved = ckpt.get("passkey")
        if saved is None and path.parent.resolve() == self.run_dir.resolve():
            saved = _read_task_yaml(self.run_dir / "passkey.yaml")
        if saved is not None:
            check_task(saved, self.task, path)

    def _checkpoint(self, memory: ModelState, rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {**super()._checkpoint(memory, rng), "passkey": asdict(self.task)}

    def _make_train_iter(self) -> PasskeyBatches:
        self.tok = PasskeyTokens(self.vocab)
        return PasskeyBatches(self.tok, self.corpus.train, self.task, self.cfg.data.batch_size,
                              self.cfg.data.tgt_len, rank=self.env.rank, world_size=self.env.world_size,
                              device=self.device)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """(x, y, True): every lane is a new document, so the loop resets the memory before each batch.
        The answer mask of the batch is kept for `_loss`, which runs right after it is yielded."""
        for batch in self.train_iter:
            self._answer, self._copy = batch.answer, batch.copy
            if not self.task.state_passing:
                yield batch.x, batch.y, True
                continue
            # State passing: reset the lanes that do not carry; the others keep the memory that the
            # last step left (detached by train_step), restored from the checkpoint after a resume.
            reset = ~batch.carry
            n = self.chunk_lanes
            self.states = [s.reset(reset[i * n:(i + 1) * n]) for i, s in enumerate(self.states)]
            question = (batch.answer.long().argmax(1) + 1).cpu().numpy()  # [B]: position of the answer
            has = batch.answer.any(1).cpu().numpy()
            self._ages.extend((batch.age + question)[has].tolist())
            yield batch.x, batch.y, False

    def _make_gate_prior(self) -> WriteGatePrior | None:
        """The task's write-gate priors (`passkey.write_penalty`, and `write_logit_penalty` from step
        `write_logit_penalty_from` on), else train.write_logit_penalty's."""
        t = self.task
        if not (t.write_penalty or t.write_logit_penalty):
            return super()._make_gate_prior()
        return WriteGatePrior(self.model, penalty=t.write_penalty, logit_penalty=t.write_logit_penalty,
                              floor=t.write_logit_floor, logit_from=t.write_logit_penalty_from)

    def _loss(self, out: LMOutput, lanes: slice) -> torch.Tensor:
        answer = self._answer[lanes]
        n = answer.sum()
        if n > 0:  # the answer NLL on its own, for the training curves
            self._answer_nll[0] += float((out.nll.detach().float() * answer).sum())
            self._answer_nll[1] += int(n)
        return answer_loss(out.nll, answer, self.task.all_weight, self._copy[lanes], self.task.copy_weight)

    def _log_train(self, window: Any, lr: float) -> None:
        super()._log_train(window, lr)
        total, n = self._answer_nll
        if n:
            values = {"answer_nll": total / n}
            if self._ages:  # state passing: how old the memories were at the questions of this window
                q = np.percentile(np.asarray(self._ages, dtype=np.float64), [10, 50, 90, 100])
                values.update({"age_mean": float(np.mean(self._ages)), "age_p10": q[0], "age_p50": q[1],
                               "age_p90": q[2], "age_max": q[3]})
            self.writer.record("train_answer", self.step, values)
            self.writer.scalars(self.step, {f"train/{k}": v for k, v in values.items()})
        self._answer_nll = [0.0, 0]
        self._ages = []

    def _validate(self) -> dict[str, Any]:
        t0 = time.time()
        haystack = None
        if self.task.haystack_text_frac > 0:
            haystack = Haystack(f"{self.cfg.data.dataset}/valid", self.corpus.split("valid"))
        with WriteGateTap(self.model) as tap:
            res = validate_instances(self.model, self.tok, self.cfg.data.tgt_len + 1, self.task, self.device,
                                     batch_size=self.cfg.data.batch_size, haystack=haystack)
        if tap.means():  # the mean write gate of each layer over the validation instances
            self.writer.scalars(self.step, {f"write_gate/layer{i}": m for i, m in tap.means().items()})
        values = {**res, "seconds": round(time.time() - t0, 2)}
        improved = res["answer_nll"] < self.best_val
        if improved:
            self.best_val = res["answer_nll"]
        values["best"] = improved
        self.writer.record("passkey", self.step, values)
        self.writer.scalars(self.step, {f"passkey/{k}": v for k, v in res.items()})
        self.writer.flush()
        self.log.info("passkey step %d | answer nll %.4f | digit acc %.3f | key acc %.3f | second-copy "
                      "digit acc %.3f | %d instances", self.step, res["answer_nll"], res["digit_acc"],
                      res["key_acc"], res["copy_digit_acc"], res["instances"])
        if improved:
            self.save_checkpoint([ckpt_io.BEST])
            self._last_saved_step = -1
        return values


def check_task(saved: dict[str, Any], task: PasskeyTaskConfig, path: Path) -> None:
    """CheckpointError naming every passkey key whose value differs between the checkpoint at `path`
    (`saved`; a key it lacks was added later and had its default) and `task`."""
    saved = {**asdict(PasskeyTaskConfig()), **saved}
    now = asdict(task)
    differ = [k for k in now if saved.get(k) != now[k]]
    if not differ:
        return
    what = "; ".join(f"passkey.{k}: checkpoint {saved.get(k)!r} vs config {now[k]!r}" for k in differ)
    sets = " ".join(f"--set passkey.{k}={json.dumps(saved.get(k))}" for k in differ)
    raise ckpt_io.CheckpointError(f"{path} was trained with other passkey settings: {what}: resume with its "
                                  f"values ({sets})")


def _read_task_yaml(path: Path) -> dict[str, Any] | None:
    """The passkey section a run folder's passkey.yaml records (None when absent or unreadable)."""
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return d if isinstance(d, dict) else None


def answer_loss(nll: torch.Tensor, answer: torch.Tensor, all_weight: float = 0.0,
                copy: torch.Tensor | None = None, copy_weight: float = 0.0) -> torch.Tensor:
    """Mean NLL over the answer digits (``answer [B, T]`` True) + ``copy_weight`` x mean NLL over the
    key's second copy (``copy [B, T]``) + ``all_weight`` x mean NLL of every target."""
    nll = nll.float()
    loss = _masked_mean(nll, answer)
    if copy_weight and copy is not None:
        loss = loss + copy_weight * _masked_mean(nll, copy)
    return loss + all_weight * nll.mean() if all_weight else loss


def _masked_mean(nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``nll`` where ``mask``; 0 (still attached to the graph) when nothing is masked."""
    n = mask.sum()
    return (nll * mask).sum() / n.clamp_min(1)


@torch.no_grad()
def validate_instances(model: InfiniTransformerLM, tok: PasskeyTokens, length: int, task: PasskeyTaskConfig,
                       device: torch.device, batch_size: int = 16,
                       haystack: Haystack | None = None) -> dict[str, float]:
    """Teacher-forced answer NLL and accuracy on ``task.val_instances`` held-out instances of ``length``
    tokens at depths spread evenly over [depth_min, depth_max] (one call per batch, fresh memory), and
    the accuracy on the key's second copy (the local copy, a diagnostic). With a ``haystack`` every
    other instance hides its key in that text instead of the filler (``text_key_acc``: their key
    accuracy)."""
    was_training = model.training
    model.eval()
    n = task.val_instances
    depths = np.linspace(task.depth_min, task.depth_max, n) if n > 1 else [task.depth_min]
    seed = VAL_SEED_OFFSET + task.seed
    insts = [make_instance(tok, length, float(d), seed + i, haystack=haystack if i % 2 else None)
             for i, d in enumerate(depths)]
    nll_sum, correct, keys, copied, text_keys = 0.0, 0, 0, 0, 0
    for i in range(0, n, batch_size):
        group = insts[i:i + batch_size]
        ids = torch.from_numpy(np.stack([g.tokens() for g in group])).to(device)
        mask = torch.from_numpy(np.stack([answer_mask(g) for g in group])).to(device)
        copy = torch.zeros_like(mask)
        for b, g in enumerate(group):
            copy[b, g.copy_pos - 1:g.copy_pos - 1 + N_DIGITS] = True
        out = model(ids[:, :-1], targets=ids[:, 1:], state=model.init_state(len(group), device),
                    return_logits=True)
        right = out.logits.argmax(-1) == ids[:, 1:]  # [B, T]
        hit = right & mask
        nll_sum += out.nll[mask].double().sum().item()
        correct += int(hit.sum())
        whole = hit.sum(1) == N_DIGITS  # [B]
        keys += int(whole.sum())
        text_keys += sum(int(w) for w, g in zip(whole.tolist(), group, strict=True) if g.haystack is not None)
        copied += int((right & copy).sum())
    model.train(was_training)
    digits = max(n * N_DIGITS, 1)
    res = {"answer_nll": nll_sum / digits, "digit_acc": correct / digits, "key_acc": keys / max(n, 1),
           "copy_digit_acc": copied / digits, "instances": float(n)}
    n_text = sum(i.haystack is not None for i in insts)
    if n_text:
        res["text_key_acc"] = text_keys / n_text
    return res


def state_nbytes(state: ModelState) -> int:
    """Bytes held by a state's tensors (memories, unfinished-segment keys/values, XL caches)."""
    return sum(t.numel() * t.element_size() for layer in state.layers for t in layer.tensors().values())


@dataclass
class Retrieval:
    """Greedy answers of a group of instances streamed together as lanes."""

    predicted: list[str]
    """Decoded five-token answers (non-digit tokens shown as '?')."""
    digits_correct: np.ndarray
    """Bool ``[B, 5]``: digit j of lane b right."""
    seconds: float
    """Wall time of the streamed prompts and the decoding."""
    tokens: int
    """Tokens fed through the model (all lanes)."""
    max_state_bytes: int
    """Largest state seen between calls (all lanes)."""


@torch.no_grad()
def retrieve(model: InfiniTransformerLM, insts: list[PasskeyInstance], chunk_len: int, device: torch.device,
             autocast: Any = None) -> Retrieval:
    """Stream the prompts of ``insts`` (same length; one lane each) in calls of ``chunk_len`` tokens with
    the state carried, then decode five tokens greedily, each fed back. Only one chunk of tokens and the
    state are ever held, so memory does not grow with the length (the paper's bounded-memory claim)."""
    length = insts[0].length
    if any(i.length != length for i in insts):
        raise ValueError("instances streamed together must have the same length")
    tok = insts[0].tok
    model.eval()
    state = model.init_state(len(insts), device)
    max_bytes = state_nbytes(state)
    streams = [i.chunks(chunk_len, stop=i.prompt_len) for i in insts]
    t0 = time.perf_counter()
    last = None
    tokens = 0
    for pieces in zip(*streams, strict=True):
        x = torch.from_numpy(np.stack(pieces)).to(device)  # [B, chunk]
        with autocast or contextlib.nullcontext():
            last, state = _last_log_probs(model, x, state)
        tokens += x.numel()
        max_bytes = max(max_bytes, state_nbytes(state))
    answer = []
    for _ in range(N_DIGITS):
        nxt = last.argmax(-1)  # [B]
        answer.append(nxt)
        with autocast or contextlib.nullcontext():
            last, state = _last_log_probs(model, nxt[:, None], state)
        tokens += nxt.numel()
        max_bytes = max(max_bytes, state_nbytes(state))
    seconds = time.perf_counter() - t0
    pred = torch.stack(answer, 1).cpu().numpy()  # [B, 5]
    truth = np.stack([i.answer_ids() for i in insts])
    digit_of = {int(t): str(d) for d, t in enumerate(tok.digit_ids)}
    predicted = ["".join(digit_of.get(int(t), "?") for t in row) for row in pred]
    return Retrieval(predicted, pred == truth, seconds, tokens, max_bytes)


def _last_log_probs(model: InfiniTransformerLM, x: torch.Tensor, state: ModelState
                    ) -> tuple[torch.Tensor, ModelState]:
    """Log-probabilities ``[B, V]`` after the last token of ``x``, and the next state."""
    out = model(x, state=state)
    return out.logits[:, -1].float(), out.state


def task_config_from_dict(d: dict[str, Any] | None) -> PasskeyTaskConfig:
    """A validated `PasskeyTaskConfig` from the `passkey:` section (unknown keys and wrong types are
    `ConfigError`s naming the key, as for the other sections)."""
    d = d or {}
    if not isinstance(d, dict):
        raise ConfigError(f"config section 'passkey' must be a mapping, got {d!r}")
    return PasskeyTaskConfig(**section_kwargs(PasskeyTaskConfig, "passkey", d))
