"""ModelConfig validation: a bad value raises ValueError naming the field and the rule it breaks."""

from __future__ import annotations

import pytest

from infiniattention import InfiniTransformerLM, ModelConfig

TINY = dict(vocab_size=60, n_layer=2, d_model=32, n_head=2, d_head=16, d_inner=64, segment_len=8,
            mem_len=8)


def config(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def test_tiny_config_is_valid_and_builds_a_model():
    cfg = config()
    assert InfiniTransformerLM(cfg).num_parameters() > 0


def test_defaults_are_valid():
    cfg = ModelConfig()
    assert (cfg.memory, cfg.update, cfg.pos) == ("infini", "delta", "rope")


def test_width_need_not_equal_heads_times_head_width():
    """Like Transformer-XL, d_model and n_head * d_head are independent (2 * 16 != 24)."""
    cfg = config(d_model=24)
    assert InfiniTransformerLM(cfg).num_parameters() > 0


@pytest.mark.parametrize("field", ["vocab_size", "n_layer", "d_model", "n_head", "d_head", "d_inner",
                                   "segment_len"])
@pytest.mark.parametrize("value", [0, -4, 2.0, True])
def test_sizes_must_be_positive_integers(field, value):
    with pytest.raises(ValueError, match=rf"model\.{field} must be a positive integer"):
        config(**{field: value})


@pytest.mark.parametrize(("field", "value", "valid"), [
    ("memory", "compressive", "infini, xl, none"),
    ("memory", "Infini", "infini, xl, none"),
    ("update", "gated", "delta, linear"),
    ("pos", "alibi", "rope, xl, none"),
    ("activation", "swish", "relu, gelu"),
    ("normalizer", "l1", "sum, corrected"),
    ("feature", "relu", "elu, dpfp"),
    ("key_norm", "l1", "none, l2"),
])
def test_unknown_choices_list_the_valid_ones(field, value, valid):
    with pytest.raises(ValueError, match=rf"model\.{field} must be one of {valid}") as info:
        config(**{field: value})
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("mem_len", [-1, 2.5, True])
def test_xl_needs_a_non_negative_integer_mem_len(mem_len):
    with pytest.raises(ValueError, match=r"model\.mem_len must be an integer >= 0 in xl mode"):
        config(memory="xl", mem_len=mem_len)
    config(memory="infini", mem_len=-1)  # ignored outside xl mode
    config(memory="xl", mem_len=0)  # no cache: local attention with xl positions


def test_same_length_is_xl_only_and_needs_a_cache():
    assert config(memory="xl", same_length=True).same_length
    for memory in ("infini", "none"):
        with pytest.raises(ValueError, match=r"model\.same_length applies to memory xl only"):
            config(memory=memory, same_length=True)
    with pytest.raises(ValueError, match=r"model\.same_length needs mem_len > 0"):
        config(memory="xl", mem_len=0, same_length=True)


def test_xl_biases_are_shared_by_default_and_per_layer_with_untie_r():
    """Transformer-XL's default: one pair u, v for the whole model; untie_r: one pair per layer."""
    shared = InfiniTransformerLM(config(memory="xl"))
    names = {n for n, _ in shared.named_parameters()}
    assert {"r_w_bias", "r_r_bias"} <= names and not any("xl_pos.r_w_bias" in n for n in names)
    untied = InfiniTransformerLM(config(memory="xl", untie_r=True))
    names = {n for n, _ in untied.named_parameters()}
    assert "r_w_bias" not in names
    assert {f"blocks.{i}.attn.xl_pos.r_{b}_bias" for i in range(2) for b in "wr"} <= names
    params = shared.num_parameters() - untied.num_parameters()
    assert params == -2 * 2 * 16  # (n_layer - 1) pairs of [n_head, d_head] fewer


def test_xl_memory_forces_xl_positions():
    assert config(memory="xl", pos="rope").pos == "xl"


def test_rope_needs_even_head_width():
    with pytest.raises(ValueError, match=r"model\.d_head must be even for rope positions, got 15"):
        config(d_head=15, pos="rope")
    config(d_head=15, pos="none")  # fine without rope


def test_xl_positions_need_even_model_width():
    with pytest.raises(ValueError, match=r"model\.d_model must be even for xl positions, got 33"):
        config(d_model=33, pos="xl")
    config(d_model=33, pos="rope")


@pytest.mark.parametrize("field", ["dropout", "dropatt"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_dropout_must_be_in_unit_interval(field, value):
    with pytest.raises(ValueError, match=rf"model\.{field} must be in \[0, 1\)"):
        config(**{field: value})


@pytest.mark.parametrize("field", ["dropout", "dropatt"])
def test_dropout_bounds_that_are_valid(field):
    config(**{field: 0.0})
    config(**{field: 0.99})


@pytest.mark.parametrize("eps", [0.0, -1e-6])
def test_eps_must_be_positive(eps):
    with pytest.raises(ValueError, match=r"model\.eps must be > 0"):
        config(eps=eps)


@pytest.mark.parametrize("cutoffs", [[40, 20], [20, 20], [0, 20], [-5, 20]])
def test_cutoffs_must_increase(cutoffs):
    with pytest.raises(ValueError, match=r"model\.cutoffs must be strictly increasing positive integers"):
        config(adaptive=True, cutoffs=cutoffs)


@pytest.mark.parametrize("cutoffs", [[20, 60], [20, 70], [60]])
def test_cutoffs_must_lie_below_vocab_size(cutoffs):
    with pytest.raises(ValueError, match=r"model\.cutoffs must lie below vocab_size=60"):
        config(adaptive=True, cutoffs=cutoffs)


def test_div_val_at_least_one():
    with pytest.raises(ValueError, match=r"model\.div_val must be >= 1"):
        config(adaptive=True, cutoffs=[20, 40], div_val=0)


def test_valid_adaptive_config():
    cfg = config(adaptive=True, cutoffs=[20, 40], div_val=2)
    assert InfiniTransformerLM(cfg).num_parameters() > 0


def test_validate_rechecks_after_mutation():
    """The model validates its config again, so a field edited after construction is caught."""
    cfg = config()
    cfg.memory = "bogus"
    with pytest.raises(ValueError, match=r"model\.memory must be one of"):
        InfiniTransformerLM(cfg)


@pytest.mark.parametrize("option", [dict(normalizer="corrected"), dict(feature="dpfp"), dict(key_norm="l2"),
                                    dict(write_gate=True)])
@pytest.mark.parametrize("memory", ["xl", "none"])
def test_memory_options_need_the_infini_memory(option, memory):
    name, value = next(iter(option.items()))
    with pytest.raises(ValueError, match=rf"model\.{name} is an option of the compressive memory") as info:
        config(memory=memory, **option)
    assert "\n" not in str(info.value)
    config(memory="infini", **option)


def test_corrected_normaliser_needs_the_delta_rule_and_write_gate_a_bool():
    with pytest.raises(ValueError, match="normalizer corrected needs model.update delta"):
        config(normalizer="corrected", update="linear")
    with pytest.raises(ValueError, match="write_gate must be true or false"):
        config(write_gate="yes")
    config(normalizer="corrected", update="delta", feature="dpfp", key_norm="l2", write_gate=True)


@pytest.mark.parametrize("options", [dict(), dict(update="linear", key_norm="l2"), dict(key_norm="none")])
def test_deltanet_normaliser_needs_the_delta_rule_and_l2_keys(options):
    with pytest.raises(ValueError, match="normalizer none .DeltaNet's memory. needs model.update delta and "
                                         "model.key_norm l2") as info:
        config(normalizer="none", **options)
    assert "\n" not in str(info.value)
    config(normalizer="none", update="delta", key_norm="l2", write_gate=True)


@pytest.mark.parametrize("label", ["infini", "xl", "none", "infini+gate", "infini+corrected+l2",
                                   "infini+gate+corrected+dpfp+l2", "infini+gate+deltanet+l2"])
def test_memory_label_and_settings_are_inverse(label):
    from infiniattention.config import memory_settings

    assert config(**memory_settings(label)).memory_label() == label


@pytest.mark.parametrize("label", ["infini+bogus", "xl+gate", "infini+gate+gate", "compressive", ""])
def test_unknown_memory_labels_are_refused(label):
    from infiniattention.config import memory_settings

    with pytest.raises(ValueError, match="unknown memory"):
        memory_settings(label)
