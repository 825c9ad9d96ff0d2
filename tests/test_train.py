"""The training loop end to end on the bundled enwik8 sample (tiny model, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
from test_train_utils import final_params, run_train, train_args, train_records

from infiniattention.training.checkpoint import list_checkpoints, load
from infiniattention.training.config import OptimConfig, load_config
from infiniattention.training.optim import lr_at, param_groups
from infiniattention.training.results import read_result as load_result
from infiniattention.training.trainer import NAN_STEPS_ENV


def test_end_to_end_outputs(tmp_path):
    run = tmp_path / "run"
    rc = run_train(run, **{"train.max_steps": 30, "train.eval_interval": 15, "train.ckpt_interval": 15,
                           "train.log_interval": 5})
    assert rc == 0
    records = train_records(run)
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    assert records[-1]["loss"] < records[0]["loss"] - 0.3
    assert all(math.isfinite(r["bpc"]) and r["tokens_per_s"] > 0 for r in records)
    assert len(train_records(run, "valid")) == 2 and len(train_records(run, "test")) == 1
    for name in ("config.yaml", "train.log", "metrics.jsonl", "best.pt", "ckpt_00000030.pt"):
        assert (run / name).is_file(), name
    assert "step 30" in (run / "train.log").read_text()
    ckpt = load(run / "ckpt_00000030.pt")
    assert ckpt["step"] == 30 and ckpt["tokens_seen"] == 30 * 4 * 32
    assert ckpt["memory"]["seen"].item() == 30 * 32 and ckpt["vocab"]["kind"] == "byte"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/bpc", "train/lr", "train/grad_norm", "train/tokens_per_s",
                "valid/loss", "valid/bpc", "test/bpc", "gate/layer0/head0", "gate/layer1/head1",
                "memory/layer0/M_abs_mean"):
        assert tag in tags, tag
    assert [e.step for e in acc.Scalars("train/loss")] == [5, 10, 15, 20, 25, 30]


def test_exact_resume_is_bitwise(tmp_path):
    """8 steps straight == 4 steps, stop, resume, 4 steps (dropout on, two micro-batches of lanes)."""
    extra = {"train.grad_accum": 2, "train.ckpt_interval": 3}
    assert run_train(tmp_path / "straight", **extra, **{"train.max_steps": 8}) == 0
    assert run_train(tmp_path / "split", **extra, **{"train.max_steps": 4}) == 0
    assert run_train(tmp_path / "split", **extra, **{"train.max_steps": 8}) == 0
    straight = [r["loss"] for r in train_records(tmp_path / "straight")]
    split = [r["loss"] for r in train_records(tmp_path / "split")]
    assert len(straight) == 8 and split == straight
    a, b = final_params(tmp_path / "straight"), final_params(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma = load(tmp_path / "straight" / "ckpt_00000008.pt")["memory"]
    mb = load(tmp_path / "split" / "ckpt_00000008.pt")["memory"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert len(list_checkpoints(tmp_path / "straight")) <= 3  # keep_last


def test_nan_step_is_skipped_and_run_continues(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(NAN_STEPS_ENV, "3")
    run = tmp_path / "run"
    assert run_train(run, **{"train.max_steps": 6}) == 0
    skips = train_records(run, "skip")
    assert [s["step"] for s in skips] == [4]  # 0-based step 3 is the 4th step
    train = train_records(run)
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert train[3]["loss"] is None and train[3]["skipped"] == 1
    assert all(math.isfinite(r["loss"]) for i, r in enumerate(train) if i != 3)
    assert "non-finite loss" in (run / "train.log").read_text()
    ckpt = load(run / "ckpt_00000006.pt")
    assert ckpt["step"] == 6 and ckpt["tokens_seen"] == 6 * 4 * 32  # the stream advanced 6 batches...
    assert ckpt["memory"]["seen"].item() == 5 * 32  # ...but the memory kept its state across the bad one
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_too_many_bad_steps_stop_with_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv(NAN_STEPS_ENV, "4,5,6,7,8,9")
    rc = run_train(run, **{"train.max_steps": 12, "train.ckpt_interval": 4, "train.max_bad_steps": 2})
    assert rc == 1
    assert [p.name for p in list_checkpoints(run)] == ["ckpt_00000004.pt"]
    log = (run / "train.log").read_text()
    assert "consecutive non-finite steps" in log and "ckpt_00000004.pt" in log


def test_missing_dataset_says_how_to_get_it(tmp_path, capsys):
    """Said when the config is loaded, before a run folder (and its train.log) is made."""
    rc = run_train(tmp_path / "run", **{"data.dataset": "enwik8", "data.data_dir": str(tmp_path / "nodata")})
    assert rc == 2
    assert "bash getdata.sh enwik8" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_config_error_exit_code(tmp_path, capsys):
    import train

    assert train.main(["--run-dir", str(tmp_path), "--set", "optim.lrr=1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err


def test_run_folder_of_another_run_names_run_dir_and_overwrite(tmp_path, capsys):
    """A run folder that holds a run of another architecture or dataset (runs/tiny of another corpus): the
    refusal says how to start the new run, and --overwrite does."""
    from data_utils.prepare import prepare_text

    run = tmp_path / "run"
    assert run_train(run, **{"train.max_steps": 1, "model.n_layer": 1}) == 0
    capsys.readouterr()
    assert run_train(run, **{"train.max_steps": 1}) == 2
    err = capsys.readouterr().err
    assert "another architecture" in err and "--run-dir" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1

    text = tmp_path / "own.txt"
    text.write_bytes(bytes(range(32, 127)) * 400)
    prepare_text("own", tmp_path / "data", input_path=text)
    other = {"train.max_steps": 1, "model.n_layer": 1, "data.dataset": "own",
             "data.data_dir": str(tmp_path / "data")}
    assert run_train(run, **other) == 2
    err = capsys.readouterr().err
    assert "vocab" in err and "--run-dir" in err and "--overwrite" in err
    assert len(list_checkpoints(run)) == 1  # the refusal moved nothing
    import train

    assert train.main([*train_args(run, **other), "--overwrite"]) == 0


def test_lanes_not_dividing_among_processes_suggest_the_nearest_batch_sizes(tmp_path, capsys):
    assert run_train(tmp_path / "run", **{"data.batch_size": 5, "train.grad_accum": 2}) == 2
    err = capsys.readouterr().err
    assert "data.batch_size=5 must be divisible by world_size x train.grad_accum = 1 x 2: use 4 or 6" in err
    assert len(err.strip().splitlines()) == 1


def test_lr_schedule_is_a_pure_function_of_the_step():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, decay_steps=110, eta_min=0.1)
    assert lr_at(0, cfg, 1000) == pytest.approx(0.1)
    assert lr_at(9, cfg, 1000) == pytest.approx(1.0)
    assert lr_at(10, cfg, 1000) == pytest.approx(1.0)
    assert lr_at(60, cfg, 1000) == pytest.approx(0.55)
    assert lr_at(110, cfg, 1000) == pytest.approx(0.1) and lr_at(500, cfg, 1000) == pytest.approx(0.1)
    const = OptimConfig(lr=0.5, schedule="constant", warmup_steps=0)
    assert lr_at(12345, const, 10) == 0.5


def test_param_groups_exclude_norms_biases_and_gates_from_decay():
    from infiniattention import InfiniTransformerLM

    cfg = load_config(None, ["model.n_layer=2", "model.d_model=32", "model.n_head=2", "model.d_head=16",
                             "optim.weight_decay=0.1", "optim.gate_lr_mult=10", "model.write_gate=true"])
    model = InfiniTransformerLM(cfg.model)
    groups = {g["name"]: g for g in param_groups(model, cfg.optim)}
    names = {id(p): n for n, p in model.named_parameters()}
    gate_names = [names[id(p)] for p in groups["gate"]["params"]]
    assert len(gate_names) == 2 and all(n.endswith(".attn.gate") for n in gate_names)
    assert groups["gate"]["lr_mult"] == 10 and groups["gate"]["weight_decay"] == 0
    no_decay = [names[id(p)] for p in groups["no_decay"]["params"]]
    assert any("norm" in n for n in no_decay) and any(n.endswith("bias") for n in no_decay)
    assert {n for n in no_decay if "write_gate" in n} == {f"blocks.{i}.attn.write_gate.{w}" for i in range(2)
                                                          for w in ("weight", "bias")}
    assert all(p.dim() >= 2 for p in groups["decay"]["params"])
    assert groups["decay"]["weight_decay"] == 0.1
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("opt", "memory", "tgt_len", "precision"),
    [("adafactor", "xl", 32, "fp32"), ("adamw", "none", 24, "fp32"), ("adamw", "infini", 32, "bf16"),
     ("adamw", "infini", 32, "fp16")],
)
def test_optimizers_baselines_precisions_and_partial_segments(tmp_path, opt, memory, tgt_len, precision):
    """Adafactor, both baselines, autocast precisions (GradScaler for fp16), and a tgt_len that is not a
    multiple of segment_len (16)."""
    run = tmp_path / "run"
    assert run_train(run, **{"train.max_steps": 3, "optim.name": opt, "optim.lr": 0.01,
                             "model.memory": memory, "data.tgt_len": tgt_len,
                             "train.precision": precision}) == 0
    assert len(train_records(run)) == 3
    ckpt = load(run / "ckpt_00000003.pt")
    assert ckpt["memory"]["seen"].item() == 3 * tgt_len
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
    if precision == "fp16":
        assert ckpt["scaler"]["scale"] > 0


def test_results_record_of_a_finished_run(tmp_path, capsys):
    import train

    run, rec_path = tmp_path / "run", tmp_path / "results" / "words" / "train.json"
    args = train_args(run, **{"train.max_steps": 3}) + ["--results", str(rec_path)]
    assert train.main(args) == 0
    rec = load_result(rec_path)
    assert rec["kind"] == "train" and rec["result"]["step"] == 3 and rec["result"]["run_dir"] == str(run)
    assert math.isfinite(rec["result"]["test"]["bpc"]) and rec["config"]["train"]["max_steps"] == 3
    first = rec["result"]["test"]["bpc"]
    rec_path.unlink()
    assert train.main(args) == 0  # finished: the same numbers, recorded again without training
    again = load_result(rec_path)["result"]
    assert again["finished"] is True and again["test"]["bpc"] == first
    capsys.readouterr()
