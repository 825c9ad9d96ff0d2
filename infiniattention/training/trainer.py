"""The training loop: segment recurrence across steps, DDP, mixed precision, exact resume, pre-emption.

One optimizer step feeds `data.tgt_len` tokens of every lane (several segments, gradients through the
memory); the state is detached and carried to the next step, as Transformer-XL carries its cache. Each
rank owns its lanes and their memory; with `train.grad_accum > 1` the rank's lanes are split into that
many micro-batches, each with its own memory state, and gradients are accumulated (DDP `no_sync`)
before one step.

Decisions the spec left open (see docs/training.md):
- A non-finite loss (or, outside fp16, a non-finite gradient norm) skips the step: no optimizer update,
  the memory state is kept from before the step, but the stream and the step counter advance (the
  batch is consumed). More than `train.max_bad_steps` in a row stop the run without writing a
  checkpoint, so the last good one stays the newest. A checkpoint is only ever written when every
  weight, optimizer state and memory value is finite; otherwise the run stops (exit 1) naming the last
  good one.
- At the start of every epoch (after the first) the memory is reset: the lanes restart elsewhere in
  the stream, so the old memory describes text that no longer precedes them.
- The final test evaluation uses the weights of `best.pt` when a validation ever ran.

The run folder's life (its lock, which checkpoint a start continues from, what is moved aside, a finished
run, the data check, the checkpoint files) is `runfolder.RunFolder`'s; the trainer holds the loop and the
state a checkpoint saves and restores.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from data_utils.corpus import get_corpus
from data_utils.iterators import LMOrderedIterator

from ..model import InfiniTransformerLM, LMOutput, ModelState, WriteGateTap
from . import checkpoint as ckpt_io
from . import faults
from .config import RunConfig, check_cutoffs_fit, save_config
from .distributed import DistEnv, all_reduce_sum, barrier, broadcast_from_main, gather_to_main, setup
from .errors import UserError
from .evaluate import EvalResult, evaluate, precision_autocast
from .gate_prior import WriteGatePrior
from .metrics import MetricsWriter, fmt, quality, setup_logging
from .optim import build_optimizer, lr_at, set_lr
from .runfolder import RunFolder, read_metrics, truncate_metrics  # noqa: F401 (importable from here, as before)

# Test hook: a comma-separated list of step numbers whose loss is replaced by NaN (on rank 0).
NAN_STEPS_ENV = "INFINIATTENTION_NAN_STEPS"


class TrainingError(UserError, RuntimeError):
    """The run cannot continue (e.g. too many non-finite steps in a row): exit status 1."""

    exit_code = 1


class Trainer:
    """Builds everything a run needs from a RunConfig, resumes if asked, and runs `fit()`."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        *,
        resume: str = "auto",
        overwrite: bool = False,
        command: str | None = None,
        progress: bool = True,
        allow_data_change: bool = False,
    ) -> None:
        if overwrite and resume not in ("auto", "never"):
            raise UserError("--overwrite starts the run afresh; it cannot be combined with --resume PATH")
        self.env: DistEnv = setup(cfg.train.device)
        self.run_dir = Path(run_dir)
        # The console only until the folder is ours: a refusal must not reach another run's train.log
        # (that of an earlier run in this process).
        self.log = setup_logging(None, self.env.is_main)
        self.folder = RunFolder(self.run_dir, self.env, self.log)
        read_only = self.folder.claim()  # before any rank writes anything
        self.writer: MetricsWriter | None = None
        try:
            self._start(cfg, resume, overwrite, command, progress, allow_data_change, read_only)
        except BaseException:
            self.close()
            raise

    def _start(self, cfg: RunConfig, resume: str, overwrite: bool, command: str | None, progress: bool,
               allow_data_change: bool, read_only: UserError | None) -> None:
        """Everything `__init__` builds once the run folder is this process's. A `read_only` folder is
        refused (that error is raised) unless the run is finished: printing its result writes nothing."""
        self.log = setup_logging(self.run_dir if read_only is None else None, self.env.is_main)
        self.command = command or "python train.py"
        # A bar only on a terminal: in a log file (SLURM, nohup, CI) it would bury the log lines.
        self.progress = progress and self.env.is_main and _is_tty(sys.stdout) and _is_tty(sys.stderr)
        self.device = self.env.device

        self.corpus = get_corpus(cfg.data.data_dir, cfg.data.dataset)
        self.vocab = self.corpus.vocab
        # vocab_size is always the corpus's (train.py already set it, see load_training_config).
        check_cutoffs_fit(cfg.model.adaptive, cfg.model.cutoffs, len(self.vocab), str(self.corpus.path))
        cfg = replace(cfg, model=replace(cfg.model, vocab_size=len(self.vocab)))
        self.cfg = cfg
        self.metric_name = quality(0.0, self.vocab.kind)[0]
        self.finished = self.folder.finished(resume, overwrite, cfg.train.max_steps, self.corpus.name,
                                             self._check_compatible)
        if self.finished is not None:
            self.log = setup_logging(None, self.env.is_main)  # the console only: no result file changes
            self.step = int(self.finished["step"])
            return
        if read_only is not None:
            raise read_only
        self.folder.start_notes()
        faults.hit("start")
        self._check_batching()
        self._check_sizes()

        ckpt_io.seed_all(cfg.train.seed)  # the same initial weights on every rank
        self.model = _build_model(cfg, self.device)
        self.gate_prior = self._make_gate_prior()  # hooks on the model itself, before any wrapper
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.precision == "fp16")
        self.train_iter = self._make_train_iter()
        self.states = self._fresh_states()
        self.step = 0
        self.tokens_seen = 0
        self.best_val = math.inf
        self.bad_steps = 0
        self.window = _Window()
        self.run_id = broadcast_from_main(ckpt_io.new_run_id(), self.env)  # one id for all ranks
        self._last_saved_step = -1
        self._stop_signal: int | None = None
        self._nan_steps = {int(s) for s in os.environ.get(NAN_STEPS_ENV, "").split(",") if s.strip()}
        self.allow_data_change = allow_data_change
        self.data_files: dict[str, dict[str, Any]] | None = None  # rank 0: digests of the data trained on
        self._data_change: str | None = None  # what --allow-data-change let through, for metrics.jsonl

        if not self._resume(resume, overwrite):
            self._check_data(None, None)
            ckpt_io.seed_all(cfg.train.seed + self.env.rank)  # each rank its own dropout stream
        self.folder.truncate_metrics(self.step)
        self.fwd = self._wrap()
        self.writer = MetricsWriter(self.run_dir, self.env.is_main, purge_step=self.step + 1)
        if self._data_change is not None:
            self.writer.record("data_change", self.step, {"allowed": self._data_change})
        if self.env.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
        n_params = self.model.num_parameters()
        self.log.info(
            "%s: %s | %d ranks on %s | model %.2fM parameters (%s memory) | %d lanes x %d tokens per step",
            self.run_dir, self.corpus, self.env.world_size, self.device, n_params / 1e6,
            cfg.model.memory_label(), cfg.data.batch_size, cfg.data.tgt_len,
        )

    def close(self) -> None:
        """Close the metrics files and give the run folder's lock back (idempotent; `fit` ends with it).
        A failure to close (a full disk) must not hide the error being raised, if any."""
        pending = sys.exc_info()[1]
        try:
            if self.writer is not None:
                self.writer.close()
        except OSError:
            if pending is None:
                raise
        finally:
            self.folder.release()

    # --------------------------------------------------------------------------------------------
    # Setup helpers.

    def _check_batching(self) -> None:
        b, w, a = self.cfg.data.batch_size, self.env.world_size, self.cfg.train.grad_accum
        if b % (w * a):
            lo, hi = b // (w * a) * w * a, -(-b // (w * a)) * w * a
            near = f"{lo} or {hi}" if lo else f"{hi}"
            # Every rank refuses; meeting first lets each print its line before the first to exit makes
            # torchrun stop the others.
            barrier()
            raise UserError(
                f"data.batch_size={b} must be divisible by world_size x train.grad_accum = {w} x {a}: "
                f"use {near} (--set data.batch_size=...) or another number of processes"
            )
        self.local_lanes = b // w
        self.chunk_lanes = self.local_lanes // a

    def _check_sizes(self) -> None:
        """What would otherwise fail only later (at the first validation, hours in): lanes of every split
        long enough, and a model whose weights and optimizer state fit in the device's memory."""
        dc, ec = self.cfg.data, self.cfg.eval
        lane = len(self.corpus.train) // dc.batch_size
        if lane < 2:
            raise UserError(f"data.batch_size={dc.batch_size} lanes are too many for the "
                            f"{len(self.corpus.train)} tokens of the train split (each lane needs 2 tokens)")
        if dc.tgt_len >= lane:
            raise UserError(f"data.tgt_len={dc.tgt_len} is not shorter than a lane of the train split "
                            f"({lane} tokens = train tokens / data.batch_size)")
        for split in ("valid", "test"):
            n = len(self.corpus.split(split))
            if n // ec.batch_size < 2:
                raise UserError(f"eval.batch_size={ec.batch_size} lanes are too many for the {n} tokens of "
                                f"the {split} split (each lane needs 2 tokens)")
        per_param = 16 if self.cfg.optim.name == "adamw" else 12  # fp32 weights, gradients, moments
        need = per_param * _parameter_estimate(self.cfg.model)
        have = _device_memory(self.device)
        if have and need > have:
            raise UserError(f"the model needs about {need / 2**30:.1f} GiB for its weights, gradients and "
                            f"optimizer state, more than the {have / 2**30:.1f} GiB of {self.device}: "
                            "make it smaller (model.n_layer, d_model, d_inner, n_head x d_head)")

    def _make_train_iter(self) -> LMOrderedIterator:
        """The training batch source (a hook: task trainers such as passkey's yield other batches)."""
        cfg = self.cfg
        return LMOrderedIterator(
            self.corpus.train, cfg.data.batch_size, cfg.data.tgt_len, rank=self.env.rank,
            world_size=self.env.world_size, device=self.device, roll_seed=cfg.data.roll_seed,
        )

    def _fresh_states(self) -> list[ModelState]:
        n = self.cfg.train.grad_accum
        return [self.model.init_state(self.chunk_lanes, self.device) for _ in range(n)]

    def _wrap(self) -> torch.nn.Module:
        module: torch.nn.Module = self.model
        if self.env.enabled:
            module = DDP(
                module, device_ids=[self.env.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=self.cfg.train.find_unused_parameters,
            )
        self.ddp = module if isinstance(module, DDP) else None
        if self.cfg.train.compile:
            module = torch.compile(module)
        return module

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the configured `train.precision` (see `precision_autocast`)."""
        return precision_autocast(self.device, self.cfg.train.precision)

    # --------------------------------------------------------------------------------------------
    # The step.

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """(x, y, epoch_start) forever; the iterator's position is what checkpoints record."""
        while True:
            fresh = self.train_iter.position in (0, self.train_iter.n_targets)
            for i, (x, y) in enumerate(self.train_iter):
                yield x, y, fresh and i == 0

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, bool]:
        """Forward/backward every micro-batch, then one optimizer step if loss and gradients are finite.

        Returns (mean loss over all ranks, gradient norm, whether the step was taken).
        """
        self.optimizer.zero_grad(set_to_none=True)
        n = len(self.states)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float32)
        new_states = []
        if self.gate_prior is not None:
            self.gate_prior.step = self.step
        for i, state in enumerate(self.states):
            lanes = slice(i * self.chunk_lanes, (i + 1) * self.chunk_lanes)
            sync = self.ddp is None or i == n - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with self.autocast():
                    out = self.fwd(x[lanes], targets=y[lanes], state=state)
                loss = self._loss(out, lanes).float() / n
                if self.step in self._nan_steps and self.env.is_main:
                    loss = loss * float("nan")
                # The write-gate prior joins the gradient, not the logged loss (bpc stays the task's).
                prior = self.gate_prior.take() if self.gate_prior is not None else None
                self.scaler.scale(loss if prior is None else loss + prior / n).backward()
            loss_sum += loss.detach()
            new_states.append(out.state.detach())
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.clip if self.cfg.optim.clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        # Every rank must take the same decision: reduce the loss (and the norm, already synced by DDP).
        stats = torch.stack([loss_sum, grad_norm.detach().float().to(self.device)])
        all_reduce_sum(stats)
        loss_val = stats[0].item() / self.env.world_size
        norm_val = stats[1].item() / self.env.world_size
        ok = math.isfinite(loss_val) and (self.scaler.is_enabled() or math.isfinite(norm_val))
        if ok:
            self.scaler.step(self.optimizer)
            self.states = new_states
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_val, norm_val, ok

    def _loss(self, out: LMOutput, lanes: slice) -> torch.Tensor:
        """The loss of micro-batch `lanes` (a hook: the mean NLL of every target here)."""
        return out.loss

    def _make_gate_prior(self) -> WriteGatePrior | None:
        """The write-gate prior of `train.write_logit_penalty` (a hook: the passkey task has its own)."""
        tc = self.cfg.train
        if not tc.write_logit_penalty:
            return None
        return WriteGatePrior(self.model, logit_penalty=tc.write_logit_penalty, floor=tc.write_logit_floor)

    # --------------------------------------------------------------------------------------------
    # The loop.

    def fit(self) -> dict[str, Any]:
        """Train to `train.max_steps` (or until SIGTERM/SIGINT/SIGHUP); returns the final metrics. A
        finished run only reports its final numbers."""
        if self.finished is not None:
            try:
                return self.folder.report_finished(self.finished, self.cfg.train.max_steps, self.metric_name)
            finally:
                self.close()
        tc = self.cfg.train
        if self.step >= tc.max_steps:
            self.log.info("the checkpoint is at step %d, at or past train.max_steps=%d: no step to train; "
                          "evaluating the test split", self.step, tc.max_steps)
        restore = self._install_signals()
        bar = tqdm(total=tc.max_steps, initial=self.step, disable=not self.progress, dynamic_ncols=True,
                   desc="train")
        result: dict[str, Any] = {"step": self.step}
        self.window.t0 = time.time()
        batches = self._batches()
        try:
            self.model.train()
            while self.step < tc.max_steps:
                x, y, epoch_start = next(batches)
                if epoch_start and self.step > 0:
                    self.states = self._fresh_states()
                lr = lr_at(self.step, self.cfg.optim, tc.max_steps)
                set_lr(self.optimizer, lr)
                loss, grad_norm, ok = self.train_step(x, y)
                self.step += 1
                n_tokens = y.numel() * self.env.world_size
                self.tokens_seen += n_tokens
                self.window.add(loss if ok else None, grad_norm, n_tokens)
                faults.hit("step")
                if ok:
                    self.bad_steps = 0
                else:
                    self._bad_step(loss, grad_norm)
                bar.update(1)
                if ok:
                    metric = f"{quality(loss, self.vocab.kind)[1]:.3f}"
                    bar.set_postfix(loss=f"{loss:.3f}", **{self.metric_name: metric},
                                    tok_s=f"{self.window.tokens_per_s():.0f}", lr=f"{lr:.2e}", refresh=False)
                if self.step % tc.log_interval == 0 or self.step == tc.max_steps:
                    self._log_train(self.window, lr)
                    self.window = _Window()
                    faults.hit("log")
                if tc.eval_interval and self.step % tc.eval_interval == 0 or self.step == tc.max_steps:
                    result["valid"] = self._validate()
                if tc.ckpt_interval and self.step % tc.ckpt_interval == 0 or self.step == tc.max_steps:
                    self.save_checkpoint([ckpt_io.ckpt_path(self.run_dir, self.step).name])
                self.folder.settle_best(self.step)
                if self._stop_requested():
                    bar.close()
                    if self._last_saved_step != self.step:
                        self.save_checkpoint([ckpt_io.ckpt_path(self.run_dir, self.step).name])
                    self.log.info(
                        "stopped by signal %s at step %d; checkpoint saved. Resume with:\n    %s",
                        signal.Signals(self._stop_signal).name, self.step, self.command,
                    )
                    result.update(step=self.step, stopped=True)
                    return result
            bar.close()
            if self._last_saved_step != self.step:
                self.save_checkpoint([ckpt_io.ckpt_path(self.run_dir, self.step).name])
            self.folder.settle_best(self.step, final=True)
            result["test"] = self._test()
            result["step"] = self.step
            self._check_final(result)
            return result
        finally:
            bar.close()
            restore()
            self.close()

    def _check_final(self, result: dict[str, Any]) -> None:
        """A run whose final numbers are not finite failed, whatever the loop did (exit status 1)."""
        for split in ("valid", "test"):
            loss = result.get(split, {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                raise TrainingError(f"the final {split} loss is {loss}: the run diverged; "
                                    f"{self.folder.last_good_text()}")

    def _bad_step(self, loss: float, grad_norm: float) -> None:
        self.bad_steps += 1
        self.log.warning(
            "step %d: non-finite loss %s / grad norm %s: step skipped (memory state kept, batch consumed; "
            "%d in a row, limit %d)", self.step, loss, grad_norm, self.bad_steps,
            self.cfg.train.max_bad_steps,
        )
        self.writer.record("skip", self.step, {"loss": str(loss), "grad_norm": str(grad_norm)})
        if self.bad_steps > self.cfg.train.max_bad_steps:
            raise TrainingError(
                f"{self.bad_steps} consecutive non-finite steps (train.max_bad_steps="
                f"{self.cfg.train.max_bad_steps}): stopping; {self.folder.last_good_text()}. Lower optim.lr, "
                "use precision fp32 or bf16, or tighten optim.clip, then resume."
            )

    def _log_train(self, window: _Window, lr: float) -> None:
        loss = window.mean_loss()
        name, value = quality(loss, self.vocab.kind) if loss is not None else (self.metric_name, None)
        values = {
            "loss": loss, name: value, "lr": lr, "grad_norm": window.mean_norm(),
            "tokens_per_s": window.tokens_per_s(), "tokens_seen": self.tokens_seen, "skipped": window.skipped,
        }
        self.writer.record("train", self.step, values)
        scalars = {f"train/{k}": v for k, v in values.items() if k not in ("tokens_seen", "skipped")}
        scalars["train/tokens_seen"] = float(self.tokens_seen)
        gates = self.model.gate_values()
        if gates is not None:
            for layer, row in enumerate(gates.tolist()):
                scalars.update({f"gate/layer{layer}/head{h}": g for h, g in enumerate(row)})
        scalars.update({f"memory/{k}": v for k, v in self.model.memory_stats(self.states[0]).items()})
        self.writer.scalars(self.step, scalars)
        self.log.info(
            "step %d | loss %s | %s %s | lr %.3e | grad norm %.3f | %.0f tok/s", self.step,
            fmt(loss), name, fmt(value), lr, window.mean_norm(), window.tokens_per_s(),
        )

    def _eval(self, split: str, max_tokens: int | None) -> EvalResult:
        ec = self.cfg.eval
        return evaluate(
            self.model, self.corpus.split(split), batch_size=ec.batch_size,
            tgt_len=ec.tgt_len or self.cfg.data.tgt_len, device=self.device, max_tokens=max_tokens,
            env=self.env, autocast=self.autocast(),
        )

    def _report(self, split: str, res: EvalResult, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        name, value = quality(res.nll, self.vocab.kind)
        values = {"loss": res.nll, name: value, "tokens": res.tokens, "batch_size": res.batch_size,
                  "tgt_len": res.tgt_len, **(extra or {})}
        self.writer.record(split, self.step, values)
        self.writer.scalars(self.step, {f"{split}/loss": res.nll, f"{split}/{name}": value})
        self.writer.flush()
        self.log.info("%s step %d | loss %.4f | %s %.4f | %d tokens", split, self.step, res.nll, name, value,
                      res.tokens)
        return values

    def _validate(self) -> dict[str, Any]:
        t0 = time.time()
        with WriteGateTap(self.model) as tap:
            res = self._eval("valid", self.cfg.eval.max_tokens)
        faults.hit("eval")
        if tap.means():  # the mean write gate of each layer over the validation tokens
            self.writer.scalars(self.step, {f"write_gate/layer{i}": m for i, m in tap.means().items()})
        if not math.isfinite(res.nll):  # the weights are broken: stop before any checkpoint holds them
            self._report("valid", res)
            raise TrainingError(f"step {self.step}: the validation loss is {res.nll}: the run diverged; "
                                f"{self.folder.last_good_text()}. Lower optim.lr or use precision fp32 or "
                                "bf16, then resume.")
        improved = res.nll < self.best_val
        if improved:
            self.best_val = res.nll
        values = self._report("valid", res, {"best": improved, "seconds": round(time.time() - t0, 2)})
        if improved:
            self.save_checkpoint([ckpt_io.BEST])
            self._last_saved_step = -1  # best.pt is not a periodic checkpoint: still write one
        return values

    def _test(self) -> dict[str, Any]:
        best = self.run_dir / ckpt_io.BEST
        extra: dict[str, Any] = {"weights": "final"}
        if best.is_file():
            ckpt = ckpt_io.load(best, map_location="cpu")
            if ckpt.get("run_id") != self.run_id:  # never report a number that mixes two runs
                raise ckpt_io.CheckpointError(
                    f"{best} belongs to run {ckpt.get('run_id')}, not to this run ({self.run_id}): move it "
                    "away and rerun to get this run's test number"
                )
            self.model.load_state_dict(ckpt["model"])
            extra = {"weights": "best", "best_step": int(ckpt["step"])}
        res = self._eval("test", self.cfg.eval.test_max_tokens)
        return self._report("test", res, extra)

    # --------------------------------------------------------------------------------------------
    # Resume and checkpoints (which file, and what is moved aside: `RunFolder`).

    def _resume(self, resume: str, overwrite: bool) -> bool:
        """Load the checkpoint that `resume` ("auto", "never" or a path) selects; True when one was loaded.
        Which one, and what is moved aside, is the run folder's decision (`RunFolder.select`)."""
        found = self.folder.select(resume, overwrite)
        if found is None:
            return False
        path, ckpt = found
        self.folder.check_compatible(ckpt, path, resume, self._check_compatible)
        self._check_data(ckpt, path)
        self._load(ckpt, path)
        self.folder.set_aside(ckpt.get("run_id"), self.step, keep=path)
        self.run_id = ckpt.get("run_id") or self.run_id
        self.folder.last_good = path
        self.log.info("resumed from %s at step %d (%d tokens seen)", path, self.step, self.tokens_seen)
        return True

    def _check_compatible(self, ckpt: dict[str, Any], path: Path) -> None:
        """Refuse (CheckpointError) a checkpoint of another architecture or vocabulary than this run's."""
        ckpt_io.check_compatible(ckpt, asdict(self.cfg.model), self.vocab.digest(), path)

    def _check_data(self, ckpt: dict[str, Any] | None, path: Path | None) -> None:
        """The data must be what `ckpt` was trained on (or, afresh, what getdata.sh prepared); see
        `RunFolder.check_data`."""
        self.data_files, self._data_change = self.folder.check_data(self.corpus, ckpt, path,
                                                                    self.allow_data_change)

    def _load(self, ckpt: dict[str, Any], path: Path) -> None:
        """Restore the trainer from `ckpt` (the inverse of `_checkpoint`)."""
        self.model.load_state_dict(ckpt["model"])
        fresh_groups = [dict(g) for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group, fresh in zip(self.optimizer.param_groups, fresh_groups, strict=True):
            # the current config's decay and multipliers win over the saved ones
            group["weight_decay"], group["lr_mult"] = fresh["weight_decay"], fresh["lr_mult"]
        self.scaler.load_state_dict(ckpt["scaler"])
        try:
            self.train_iter.load_state_dict(ckpt["iterator"])
        except ValueError as err:
            raise ckpt_io.CheckpointError(f"{path}: {err}") from err
        self.step = int(ckpt["step"])
        self.tokens_seen = int(ckpt["tokens_seen"])
        self.best_val = float(ckpt["best_val"])
        self._last_saved_step = self.step
        if "log_window" in ckpt:  # the first log line after a resume averages a full window
            self.window = _Window.from_state(ckpt["log_window"])
        self.states = self._shard_memory(ModelState.from_state_dict(ckpt["memory"]), path)
        self._load_rng(ckpt["rng"], path)

    def _shard_memory(self, full: ModelState, path: Path) -> list[ModelState]:
        """This rank's micro-batches of the global batch's memory, cut by lanes: works for any world size
        and grad_accum dividing the global batch."""
        if full.batch_size != self.cfg.data.batch_size:
            raise ckpt_io.CheckpointError(
                f"{path} holds the memory of {full.batch_size} lanes but data.batch_size is "
                f"{self.cfg.data.batch_size}: resume with the same global batch size"
            )
        start, n = self.env.rank * self.local_lanes, self.chunk_lanes
        return [full.select_lanes(start + i * n, start + (i + 1) * n).to(self.device)
                for i in range(self.cfg.train.grad_accum)]

    def _load_rng(self, rng: list[dict[str, Any]], path: Path) -> None:
        """This rank's RNG states; another world size cannot continue the same dropout streams."""
        if len(rng) == self.env.world_size:
            ckpt_io.restore_rng(rng[self.env.rank])
            return
        self.log.warning(
            "%s was written by %d ranks, this run has %d: memory and data position are re-sharded "
            "exactly, but dropout streams are re-seeded (the continuation is not bit-for-bit)",
            path, len(rng), self.env.world_size,
        )
        ckpt_io.seed_all(self.cfg.train.seed + 7919 * self.step + self.env.rank)

    def save_checkpoint(self, names: list[str]) -> None:
        """Gather every rank's memory and RNG state and write them (rank 0) under each of `names`.

        Refuses (TrainingError) when any weight, optimizer state or memory value is not finite: such a
        file would be resumed from and called good. A full disk raises DiskFullError naming the intact
        previous checkpoint.
        """
        local = {k: v.detach().cpu() for k, v in ModelState.cat_lanes(self.states).state_dict().items()}
        self._check_finite(local)
        gathered = gather_to_main({"memory": local, "rng": ckpt_io.capture_rng()}, self.env)
        if self.env.is_main:
            memory = ModelState.cat_lanes([ModelState.from_state_dict(g["memory"]) for g in gathered])
            ckpt = self._checkpoint(memory, [g["rng"] for g in gathered])
            self.folder.write(ckpt, names, self.cfg.train.keep_last)
        if ckpt_io.BEST in names:
            self.folder.best_written()
        self._last_saved_step = self.step
        barrier()

    def _check_finite(self, memory: dict[str, torch.Tensor]) -> None:
        """TrainingError on every rank when any rank's weights, optimizer state or `memory` hold NaN/inf."""
        bad = ckpt_io.all_finite({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                  "memory": memory})
        flag = torch.tensor([float(len(bad))], device=self.device)
        all_reduce_sum(flag)  # every rank stops together
        if flag.item() > 0:
            where = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "") if bad else "another rank's state"
            raise TrainingError(
                f"step {self.step}: non-finite values in {where}; no checkpoint written; "
                f"{self.folder.last_good_text()}. "
                "Lower optim.lr, raise optim.eps, tighten optim.clip or use precision fp32, then resume."
            )

    def _checkpoint(self, memory: ModelState, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything needed to continue bit for bit, given the global batch's `memory` and every rank's
        `rng` (rank 0)."""
        return {
            "format_version": ckpt_io.FORMAT_VERSION,
            "run_id": self.run_id,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "best_val": self.best_val,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iterator": self.train_iter.state_dict(),
            "memory": memory.state_dict(),
            "rng": rng,
            "log_window": self.window.state_dict(),
            "world_size": self.env.world_size,
            "config": self.cfg.to_dict(),
            "dataset": self.corpus.name,
            "data_files": self.data_files,
            "vocab": self.vocab.to_dict(),
            "vocab_digest": self.vocab.digest(),
            "versions": ckpt_io.versions(),
        }

    # --------------------------------------------------------------------------------------------
    # Pre-emption.

    def _install_signals(self):
        """SIGTERM, SIGINT and SIGHUP (a closed terminal, a dropped ssh) set a flag; the loop finishes its
        step, checkpoints and exits. A SIGHUP ignored when the run started (`nohup`) stays ignored."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            self._stop_signal = signum

        signals = [signal.SIGTERM, signal.SIGINT]
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            signals.append(signal.SIGHUP)
        old = {s: signal.signal(s, handler) for s in signals}
        return lambda: [signal.signal(s, h) for s, h in old.items()]

    def _stop_requested(self) -> bool:
        """True on every rank when any rank got a signal (ranks must stop at the same step)."""
        flag = torch.tensor([1.0 if self._stop_signal is not None else 0.0], device=self.device)
        all_reduce_sum(flag)
        if flag.item() > 0 and self._stop_signal is None:
            self._stop_signal = signal.SIGTERM
        return flag.item() > 0


class _Window:
    """Running sums between two log lines."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.loss_sum = 0.0
        self.norm_sum = 0.0
        self.good = 0
        self.steps = 0
        self.skipped = 0
        self.tokens = 0

    _FIELDS = ("loss_sum", "norm_sum", "good", "steps", "skipped", "tokens")

    def state_dict(self) -> dict[str, float]:
        """The sums (not the clock): stored in checkpoints so that a resumed window is complete."""
        return {k: getattr(self, k) for k in self._FIELDS}

    @classmethod
    def from_state(cls, state: dict[str, float]) -> _Window:
        window = cls()
        for k in cls._FIELDS:
            setattr(window, k, type(getattr(window, k))(state[k]))
        return window

    def add(self, loss: float | None, grad_norm: float, tokens: int) -> None:
        self.steps += 1
        self.tokens += tokens
        if loss is None:
            self.skipped += 1
            return
        self.good += 1
        self.loss_sum += loss
        self.norm_sum += grad_norm if math.isfinite(grad_norm) else 0.0

    def mean_loss(self) -> float | None:
        return self.loss_sum / self.good if self.good else None

    def mean_norm(self) -> float:
        return self.norm_sum / self.good if self.good else float("nan")

    def tokens_per_s(self) -> float:
        return self.tokens / max(time.time() - self.t0, 1e-9)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _parameter_estimate(m: Any) -> int:
    """Parameters of a model config, to within a few percent (attention + FFN + embeddings)."""
    attn = 4 * m.d_model * m.n_head * m.d_head
    ffn = 2 * m.d_model * m.d_inner
    emb = m.vocab_size * m.d_model * (1 if m.tie_weights else 2)
    return m.n_layer * (attn + ffn) + emb


def _device_memory(device: torch.device) -> int | None:
    """Total memory of `device` in bytes (None when unknown)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _build_model(cfg: RunConfig, device: torch.device) -> InfiniTransformerLM:
    try:
        return InfiniTransformerLM(cfg.model).to(device)
    except (RuntimeError, MemoryError) as err:
        if isinstance(err, MemoryError) or "memory" in str(err).lower() or "allocate" in str(err).lower():
            raise UserError(f"the model does not fit in the memory of {device} ({str(err)[:80]}): make it "
                            "smaller") from err
        raise
