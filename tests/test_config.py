"""Config dataclasses, YAML loading and `--set` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from infiniattention.training.config import ConfigError, RunConfig, config_from_dict, load_config, save_config

# passkey_*.yaml add a `passkey:` section read by scripts/passkey.py (tested in test_passkey.py).
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")
                 if not p.stem.startswith("passkey_"))


def test_defaults_and_overrides():
    cfg = load_config(None, ["optim.lr=1e-3", "model.n_layer=6", "eval.max_tokens=null", "optim.clip=1"])
    assert isinstance(cfg, RunConfig)
    assert cfg.optim.lr == 1e-3 and cfg.model.n_layer == 6 and cfg.eval.max_tokens is None
    assert cfg.optim.clip == 1.0 and isinstance(cfg.optim.clip, float)


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean 'optim\.lr'.*valid: .*warmup_steps"):
        load_config(None, ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match=r"unknown config section 'optm'.*did you mean 'optim'"):
        load_config(None, ["optm.lr=1e-3"])
    with pytest.raises(ConfigError, match=r"model\.n_layr.*'model\.n_layer'"):
        config_from_dict({"model": {"n_layr": 2}})


def test_wrong_types_are_errors():
    with pytest.raises(ConfigError, match=r"model\.n_layer must be int.*'six'"):
        load_config(None, ["model.n_layer=six"])
    with pytest.raises(ConfigError, match=r"train\.compile must be bool"):
        load_config(None, ["train.compile=1"])
    with pytest.raises(ConfigError, match=r"model\.memory must be one of"):
        load_config(None, ["model.memory=lstm"])


@pytest.mark.parametrize("value", ["0", "-4", "2.5", "abc"])
def test_tgt_len_must_be_positive_int(value):
    with pytest.raises(ConfigError, match=r"data\.tgt_len"):
        load_config(None, [f"data.tgt_len={value}"])


def test_tgt_len_need_not_be_a_multiple_of_segment_len():
    cfg = load_config(None, ["data.tgt_len=100", "model.segment_len=64"])
    assert cfg.data.tgt_len == 100


def test_bad_set_syntax():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["optim.lr"])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
@pytest.mark.parametrize("memory", ["infini", "xl", "none"])
def test_shipped_configs_load_with_every_memory(path, memory):
    cfg = load_config(path, [f"model.memory={memory}"])
    assert cfg.model.memory == memory
    if memory == "xl":
        assert cfg.model.pos == "xl"


def test_resolved_config_round_trip(tmp_path):
    cfg = load_config(CONFIGS[0], ["optim.lr=0.01"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg


def test_shapes_of_the_reference_configs():
    base = load_config(Path(CONFIGS[0]).with_name("enwik8_base.yaml"))
    assert (base.model.n_layer, base.model.d_model, base.model.n_head, base.model.d_head) == (12, 512, 8, 64)
    assert base.model.d_inner == 2048 and base.optim.lr == 2.5e-4
    xl = load_config(Path(CONFIGS[0]).with_name("enwik8_base_xl.yaml"))  # kimiyoung/transformer-xl's recipe
    assert (xl.model.memory, xl.model.mem_len, xl.data.tgt_len, xl.data.batch_size) == ("xl", 512, 512, 22)
    assert (xl.train.max_steps, xl.optim.lr, xl.optim.clip, xl.model.dropout) == (400000, 2.5e-4, 0.25, 0.1)
    assert not xl.model.untie_r and not xl.model.same_length
    shape = ("n_layer", "d_model", "n_head", "d_head", "d_inner", "segment_len", "dropout")
    assert [getattr(base.model, f) for f in shape] == [getattr(xl.model, f) for f in shape]

    def tokens(c):
        return c.data.batch_size * c.data.tgt_len * c.train.max_steps

    assert tokens(xl) == 22 * 512 * 400000
    step = base.data.batch_size * base.data.tgt_len
    assert abs(tokens(base) - tokens(xl)) < step  # the same budget, to less than one step
    assert base.data.batch_size % 8 == 0 and base.data.tgt_len % base.model.segment_len == 0
    assert base.optim.decay_steps == base.train.max_steps and xl.optim.decay_steps == xl.train.max_steps
    large = load_config(Path(CONFIGS[0]).with_name("enwik8_large.yaml"))
    assert (large.model.n_layer, large.model.d_model, large.model.d_inner, large.model.dropout) == (
        24, 1024, 3072, 0.15)
    wt = load_config(Path(CONFIGS[0]).with_name("wt103_base.yaml"))
    assert wt.model.adaptive and wt.model.cutoffs == [20000, 40000, 200000]


def test_a_config_that_is_not_a_regular_file_is_named_so():
    """`--config /dev/zero` used to say "not found" (and reading it would never end)."""
    from infiniattention.commands.shipped import config_path

    assert config_path("/dev/zero") == "/dev/zero"
    with pytest.raises(ConfigError, match="config file /dev/zero is not a regular file"):
        load_config("/dev/zero")
    with pytest.raises(ConfigError, match="config file /no/such.yaml not found"):
        load_config("/no/such.yaml")


TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def test_schedule_relations_are_refused_at_config_time():
    """eta_min above lr made the cosine climb (`--set optim.eta_min=1e9`: the rate went to 9e8 and the loss
    to NaN); a decay that ends before the warm-up made the rate jump. A run shorter than its warm-up (a
    smoke test of a big config) and a constant schedule, which uses neither value, stay allowed."""
    with pytest.raises(ConfigError, match=r"optim.eta_min \(1e\+09\) must not exceed optim.lr \(0.005\)"):
        load_config(TINY, ["optim.eta_min=1e9"])
    with pytest.raises(ConfigError, match=r"warmup_steps \(50\) must be below optim.decay_steps \(50\)"):
        load_config(TINY, ["optim.decay_steps=50"])
    assert load_config(TINY, ["optim.eta_min=5e-3"]).optim.eta_min == 5e-3  # = lr: flat
    assert load_config(TINY, ["train.max_steps=10"]).optim.warmup_steps == 50
    constant = load_config(None, ["optim.schedule=constant", "optim.eta_min=1", "optim.lr=0.1"])
    assert constant.optim.eta_min == 1
