"""The write-gate priors (training/gate_prior.py): the value against its formula, where it acts, and
`train.write_logit_penalty` in a language-model run (the passkey task's own priors: test_passkey.py)."""

from __future__ import annotations

import pytest
import torch
from test_train_utils import run_train, train_records

from infiniattention import InfiniTransformerLM, ModelConfig
from infiniattention.training.config import ConfigError, RunConfig, TrainConfig
from infiniattention.training.gate_prior import WriteGatePrior


def _model(write_gate: bool = True) -> InfiniTransformerLM:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50, n_layer=2, d_model=32, n_head=2, d_head=16, d_inner=64, segment_len=8,
                      memory="infini", write_gate=write_gate, dropout=0.0)
    model = InfiniTransformerLM(cfg).train()
    with torch.no_grad():  # logits on both sides of the floor
        for block in model.blocks if write_gate else ():
            block.attn.write_gate.bias.normal_(0.0, 3.0)
    return model


def _logits(model: InfiniTransformerLM, x: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [b.attn.write_gate.register_forward_hook(lambda m, a, out: seen.append(out.detach().double()))
             for b in model.blocks]
    model(x)
    for h in hooks:
        h.remove()
    return seen


def test_the_prior_is_its_formula_per_layer_and_only_where_it_acts():
    model = _model()
    x = torch.randint(0, 50, (3, 24), generator=torch.Generator().manual_seed(1))
    logits = _logits(model, x)
    prior = WriteGatePrior(model, penalty=0.3, logit_penalty=0.05, floor=-1.0, logit_from=2)
    expected_l1 = sum(0.3 * torch.sigmoid(lg).mean() for lg in logits) / len(logits)
    expected_logit = sum(0.05 * (lg + 1.0).clamp_min(0).mean() for lg in logits) / len(logits)

    prior.step = 1  # before logit_from: the L1 prior alone
    model(x)
    assert torch.allclose(prior.take().double(), expected_l1, rtol=1e-5)
    assert prior.take() is None  # taken: cleared
    prior.step = 2
    model(x)
    got = prior.take()
    assert got.requires_grad and torch.allclose(got.double(), expected_l1 + expected_logit, rtol=1e-5)
    both_sides = torch.cat([lg.flatten() for lg in logits])
    assert (both_sides < -1.0).any() and (both_sides > -1.0).any()  # the floor cuts the logits tested
    with torch.no_grad():  # validation and evaluation: nothing
        model(x)
    assert prior.take() is None
    prior.remove()
    model(x)
    assert prior.take() is None


def test_the_logit_prior_has_no_gradient_below_its_floor():
    """Below the floor the prior stops: the gate's weights get no gradient from a logit under it."""
    model = _model()
    x = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(2))
    prior = WriteGatePrior(model, logit_penalty=1.0, floor=1e3)
    model(x)
    loss = prior.take()
    assert float(loss.detach()) == 0.0
    loss.backward()
    grads = [b.attn.write_gate.bias.grad for b in model.blocks]
    assert all(g is None or not g.any() for g in grads)


def test_a_model_without_a_write_gate_is_refused():
    with pytest.raises(ValueError, match="write gate"):
        WriteGatePrior(_model(write_gate=False), logit_penalty=1.0)


def test_train_config_refuses_a_prior_without_a_gate_or_below_zero():
    with pytest.raises(ConfigError, match="needs model.write_gate: true"):
        RunConfig(train=TrainConfig(write_logit_penalty=0.1))
    with pytest.raises(ConfigError, match="train.write_logit_penalty must be a finite number >= 0"):
        TrainConfig(write_logit_penalty=-1.0)
    with pytest.raises(ConfigError, match="train.write_logit_floor must be finite"):
        TrainConfig(write_logit_floor=float("nan"))


def test_a_language_model_run_with_the_prior_lowers_the_gate_and_logs_the_task_loss(tmp_path, capsys):
    """train.write_logit_penalty: 4 steps with a large prior leave every gate bias lower than the same
    run without it; the first step's logged loss (the same weights, the same batch) is the task's alone."""
    from infiniattention.training.checkpoint import load

    runs = {}
    for penalty in (0.0, 50.0):
        run = tmp_path / f"p{penalty}"
        assert run_train(run, **{"model.write_gate": True, "train.max_steps": 4, "optim.warmup_steps": 0,
                                 "optim.lr": 0.01, "train.write_logit_penalty": penalty}) == 0
        runs[penalty] = run
    bias = {p: load(sorted(r.glob("ckpt_*.pt"))[-1])["model"]["blocks.0.attn.write_gate.bias"]
            for p, r in runs.items()}
    assert (bias[50.0] < bias[0.0] - 0.02).all(), bias
    first = {p: train_records(r)[0]["loss"] for p, r in runs.items()}
    assert first[50.0] == first[0.0]
    capsys.readouterr()
    assert run_train(tmp_path / "no-gate", **{"train.write_logit_penalty": 1.0}) == 2
    assert "train.write_logit_penalty acts on the write gate: it needs model.write_gate: true" in \
        capsys.readouterr().err


def test_a_text_row_ending_in_zg_trains_with_the_prior_and_sp_is_refused():
    """scripts/compare_memory.sh's rows: zg is train.write_logit_penalty in a text run, the passkey
    prior in a passkey run; sp (passkey state passing) has no meaning in a text run."""
    import importlib.util

    from test_train_utils import REPO

    spec = importlib.util.spec_from_file_location("compare_table_t", REPO / "scripts" / "compare_table.py")
    ct = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ct)
    assert ct.row_sets("infini+gate+zg", 64) == ["model.memory=infini", "model.write_gate=true",
                                                 "train.write_logit_penalty=0.05"]
    assert ct.row_sets("infini+gate+zg", 64, passkey=True)[-1] == "passkey.write_logit_penalty=0.05"
    with pytest.raises(ValueError, match="sp is a passkey recipe word"):
        ct.row_sets("infini+gate+sp", 64)
    with pytest.raises(ValueError, match="come once each, after the memory's options"):
        ct.row_sets("infini+zg+gate", 64)
    assert ct.row_sets("infini+gate+sp+zg4", 64, passkey=True)[-2:] == [
        "passkey.state_passing=0.99", "passkey.write_logit_penalty=0.2"]
    assert ct.row_sets("infini+gate+zg4", 64)[-1] == "train.write_logit_penalty=0.2"
    with pytest.raises(ValueError, match="zg and zg4 set the same thing; choose one"):
        ct.row_sets("infini+gate+zg+zg4", 64, passkey=True)
