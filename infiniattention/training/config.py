"""Run configuration: nested dataclasses (model, data, optim, train, eval) filled from YAML and `--set`.

Every field carries a docstring; values are checked where they enter (`__post_init__`), and a key that
does not exist or a value of the wrong type is an error that names the key, lists the valid ones and
suggests the closest (difflib).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_utils.corpus import CorpusNotFoundError, DataError, load_vocab

from ..config import ModelConfig
from .errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "adafactor")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(UserError, ValueError):
    """A configuration key or value the user must fix."""


@dataclass
class DataConfig:
    """Which corpus, and how it is cut into lanes and steps."""

    dataset: str = "enwik8"
    """Prepared corpus folder under `data_dir` (`bash getdata.sh NAME` creates it)."""
    data_dir: str = "data"
    """Root folder of the prepared corpora."""
    batch_size: int = 22
    """Global number of lanes (contiguous streams); divided among DDP ranks and `train.grad_accum`."""
    tgt_len: int = 512
    """Tokens per lane per optimizer step; gradients flow through the memory across all of them. Any
    positive integer works (segment boundaries are fixed by stream position and the model carries an
    unfinished segment over), but a multiple of `model.segment_len` wastes no compute on partial
    segments."""
    roll_seed: int | None = None
    """Rotate the training stream by a seeded offset at every epoch (None: Transformer-XL's fixed lanes)."""

    def __post_init__(self) -> None:
        _positive_int("data", "batch_size", self.batch_size)
        _positive_int("data", "tgt_len", self.tgt_len)
        if self.roll_seed is not None and self.roll_seed < 0:
            raise ConfigError(f"data.roll_seed must be >= 0, got {self.roll_seed}")


@dataclass
class OptimConfig:
    """Optimizer, learning-rate schedule and gradient clipping."""

    name: str = "adamw"
    """adamw (torch.optim.AdamW) or adafactor (torch.optim.Adafactor, the paper's choice)."""
    lr: float = 2.5e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Decoupled weight decay; never applied to norms, biases, the gates b of eq. 10 or the memory's
    write gates."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.999
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    gate_lr_mult: float = 1.0
    """Learning-rate multiplier of the per-head gate logits b (eq. 10), which sit in their own group."""
    schedule: str = "cosine"
    """cosine: linear warm-up then cosine decay to `eta_min`; constant: warm-up then `lr`."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to `lr` over this many steps (a run shorter than its warm-up, such as a
    smoke test with a small `train.max_steps`, ends before `lr` is reached)."""
    decay_steps: int | None = None
    """Step at which the cosine reaches `eta_min` (None: `train.max_steps`); after it the rate stays at
    `eta_min`. Must exceed `warmup_steps`."""
    eta_min: float = 0.0
    """Final learning rate of the cosine schedule; at most `lr` (above it the cosine would climb)."""
    clip: float = 0.25
    """Clip the global gradient norm to this value (0: no clipping, the norm is still logged)."""

    def __post_init__(self) -> None:
        _choice("optim", "name", self.name, OPTIMIZERS)
        _choice("optim", "schedule", self.schedule, SCHEDULES)
        # lr and eps must be > 0: eps=0 divides 0 by 0 on the first step and puts NaN into the weights.
        for name in ("lr", "eps"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"optim.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "gate_lr_mult", "eta_min", "clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"optim.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"optim.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay_steps is not None:
            _positive_int("optim", "decay_steps", self.decay_steps)
        self._check_schedule()

    def _check_schedule(self) -> None:
        """Relations between the schedule's values (`lr_at`): the cosine must descend from `lr` to
        `eta_min`, and start after the warm-up ends."""
        if self.schedule != "cosine":  # constant: eta_min and decay_steps are not used
            return
        if self.eta_min > self.lr:
            raise ConfigError(f"optim.eta_min ({self.eta_min:g}) must not exceed optim.lr ({self.lr:g}): the "
                              "cosine would climb from lr to eta_min; set eta_min <= lr")
        if self.decay_steps is not None and self.warmup_steps >= self.decay_steps:
            raise ConfigError(
                f"optim.warmup_steps ({self.warmup_steps}) must be below optim.decay_steps "
                f"({self.decay_steps}): the cosine would end before the warm-up does and the rate jump from "
                "lr to eta_min; lower warmup_steps or raise decay_steps (unset: train.max_steps)"
            )


@dataclass
class TrainConfig:
    """The training loop: length, precision, devices, intervals and safety limits."""

    max_steps: int = 400_000
    """Optimizer steps in all (a resumed run continues up to this step)."""
    grad_accum: int = 1
    """Split each rank's lanes into this many micro-batches (Transformer-XL's batch_chunk); each keeps
    its own memory state and gradients are accumulated before one optimizer step."""
    precision: str = "fp32"
    """fp32, bf16 (autocast) or fp16 (autocast + GradScaler). Memory state stays float32 regardless."""
    compile: bool = False
    """Run the model through torch.compile."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu or cuda. Under torchrun each rank uses cuda:LOCAL_RANK."""
    seed: int = 1111
    """Seed of the initialisation; rank r seeds its dropout streams with seed + r."""
    log_interval: int = 100
    """Steps between log lines, metrics.jsonl records and TensorBoard scalars."""
    eval_interval: int = 4000
    """Steps between validations (0: only at the end)."""
    ckpt_interval: int = 4000
    """Steps between checkpoints (0: only at the end, or when SIGTERM, SIGINT or SIGHUP stops the run)."""
    keep_last: int = 3
    """Periodic checkpoints to keep (best.pt is kept in addition)."""
    max_bad_steps: int = 10
    """Stop the run after more than this many consecutive steps with a non-finite loss or gradient."""
    find_unused_parameters: bool = False
    """Passed to DistributedDataParallel (needed only when some parameters get no gradient)."""
    write_logit_penalty: float = 0.0
    """A prior on the write gate's logits above `write_logit_floor`, added to the training loss (not to
    the logged one): the gate is pushed to write nothing where the loss does not need it
    (training/gate_prior.py; docs/passkey.md, "Holding to 1M"). Needs model.write_gate. 0: off."""
    write_logit_floor: float = -12.0
    """Where `write_logit_penalty` stops pushing: sigmoid(-12) = 6e-6."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum", "log_interval", "keep_last"):
            _positive_int("train", name, getattr(self, name))
        for name in ("eval_interval", "ckpt_interval", "max_bad_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)!r}")
        _choice("train", "precision", self.precision, PRECISIONS)
        _choice("train", "device", self.device, DEVICES)
        if not 0 <= self.seed < 2**32:  # torch, numpy and python all accept this range
            raise ConfigError(f"train.seed must be in [0, 2**32), got {self.seed}")
        if not (math.isfinite(self.write_logit_penalty) and self.write_logit_penalty >= 0):
            raise ConfigError(f"train.write_logit_penalty must be a finite number >= 0, got "
                              f"{self.write_logit_penalty!r}")
        if not math.isfinite(self.write_logit_floor):
            raise ConfigError(f"train.write_logit_floor must be finite, got {self.write_logit_floor!r}")


@dataclass
class EvalConfig:
    """Validation during training and the defaults of eval.py."""

    batch_size: int = 1
    """Lanes of the evaluated stream. 1 streams the whole split with one memory (the most faithful
    number); more lanes are faster but each lane starts with an empty memory."""
    tgt_len: int | None = None
    """Tokens per lane per forward call (None: data.tgt_len). The model carries its state across calls,
    so the result does not depend on it up to float rounding."""
    max_tokens: int | None = None
    """Cap on the tokens of each periodic validation (None: the whole valid split)."""
    test_max_tokens: int | None = None
    """Cap on the tokens of the final test evaluation (None: the whole test split)."""

    def __post_init__(self) -> None:
        _positive_int("eval", "batch_size", self.batch_size)
        for name in ("tgt_len", "max_tokens", "test_max_tokens"):
            if getattr(self, name) is not None:
                _positive_int("eval", name, getattr(self, name))


@dataclass
class RunConfig:
    """Everything a run needs; written resolved to `config.yaml` and into every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Model shape and behaviour (`vocab_size` is set from the corpus vocabulary)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Corpus and batching."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Training loop."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""

    def __post_init__(self) -> None:
        if self.train.write_logit_penalty and not self.model.write_gate:
            raise ConfigError("train.write_logit_penalty acts on the write gate: it needs model.write_gate: "
                              "true")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (YAML- and `weights_only`-safe)."""
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


def _positive_int(section: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{section}.{name} must be a positive integer, got {value!r}")


def _choice(section: str, name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{section}.{name} must be one of {', '.join(valid)}; got {value!r}")


def _unknown(kind: str, key: str, valid: list[str]) -> ConfigError:
    prefix, _, last = key.rpartition(".")
    close = difflib.get_close_matches(last, valid, n=1)
    hint = f" (did you mean {(prefix + '.' if prefix else '') + close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config {kind} {key!r}{hint}; valid: {', '.join(valid)}")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """`value` checked against the annotation `tp`; ints become floats for float fields, and strings such
    as "1e-3" (which YAML 1.1 reads as text) become floats too."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as err:
                errors.append(err)
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 else math.inf
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # no setting of this project means anything as NaN or inf
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def section_kwargs(cls: type, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of dataclass `cls` from the YAML section `name`, each coerced to its type; an
    unknown key or a wrong type is a `ConfigError` naming `name.key`."""
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown("key", f"{name}.{key}", valid)
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return kwargs


def check_cutoffs_fit(adaptive: bool, cutoffs: list[int], vocab_size: int, corpus: str) -> None:
    """One line when the adaptive softmax's cutoffs do not fit the vocabulary of `corpus` (the model's
    own check could only say "below vocab_size", without saying whose vocabulary that is)."""
    if adaptive and cutoffs and max(cutoffs) >= vocab_size:
        raise ConfigError(
            f"model.cutoffs {list(cutoffs)} do not fit {corpus}: its vocabulary has {vocab_size:,} symbols "
            "and every cutoff must be below that; set smaller ones (--set model.cutoffs=[...]) or "
            "--set model.adaptive=false"
        )


def _build_section(name: str, values: dict[str, Any], corpus: tuple[str, int | None] | None = None) -> Any:
    """Section `name` from its YAML values; for the model section, `corpus` = (its name, its vocabulary
    size) sets model.vocab_size before anything is checked. A size of None (a corpus not prepared yet)
    checks everything else: the cutoffs wait for the vocabulary, which the trainer reads."""
    cls = SECTIONS[name]
    kwargs = section_kwargs(cls, name, values)
    if name == "model" and corpus is not None:
        where, size = corpus
        cutoffs = kwargs.get("cutoffs", [])
        if size is None:
            size = max([kwargs.get("vocab_size", ModelConfig.vocab_size), *(c + 1 for c in cutoffs)])
        else:
            check_cutoffs_fit(kwargs.get("adaptive", False), cutoffs, size, where)
        kwargs["vocab_size"] = size
    try:
        built = cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:  # ModelConfig raises plain ValueError
        raise ConfigError(str(err)) from err
    if name == "model":
        _check_model(built)
    return built


def _check_model(model: ModelConfig) -> None:
    """Rules ModelConfig leaves to the trainer (the model itself accepts them)."""
    if not model.init_std > 0:
        raise ConfigError(f"model.init_std must be > 0, got {model.init_std!r}")


def config_from_dict(d: dict[str, Any] | None, corpus: tuple[str, int | None] | None = None) -> RunConfig:
    """A validated RunConfig from a nested dict (missing keys keep their defaults). `corpus`: (name,
    vocabulary size) of the corpus the model is for; its size replaces model.vocab_size before the
    model section is validated, so the adaptive cutoffs are checked against the real vocabulary."""
    d = d or {}
    _check_sections(d)
    return RunConfig(**{name: _build_section(name, d.get(name) or {}, corpus) for name in SECTIONS})


def _check_sections(d: Any, where: str = "", extra_sections: tuple[str, ...] = ()) -> None:
    """`d` must map known section names (those of SECTIONS and `extra_sections`) to mappings (or nothing)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}a config must be a mapping of sections, got {type(d).__name__}")
    for section, values in d.items():
        if section not in SECTIONS and section not in extra_sections:
            raise ConfigError(f"{where}{_unknown('section', str(section), [*SECTIONS, *extra_sections])}")
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{where}config section {section!r} must be a mapping of keys to values, "
                              f"got {values!r}")
        for key in values or {}:
            if not isinstance(key, str):
                raise ConfigError(f"{where}config key {key!r} in section {section!r} must be a name")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping: plain YAML keeps the last one
    silently, so `batch_size: 16` followed later by `batch_size: 8` would train with 8 unnoticed."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` merges may be overridden on purpose; other keys cannot repeat
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in lines:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice, on lines {lines[key]} and {line}: keep one",
                        key_node.start_mark,
                    )
                lines[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_load(text: str, what: str) -> Any:
    """yaml.safe_load, with any YAML error (syntax, a python tag, a key given twice, ...) as one
    ConfigError line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        if "could not determine a constructor" in str(err):
            problem = "unsupported YAML tag (only plain values, lists and mappings are allowed)"
        raise ConfigError(f"{what}{at}: invalid YAML: {problem}") from err


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value parsed with yaml.safe_load)."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--set key must be section.key (e.g. optim.lr), got {key!r}")
    return parts, _yaml_load(raw, f"--set {text!r}") if raw.strip() else None


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of the nested dict `d` with every `section.key=value` applied in order."""
    out = {k: dict(v or {}) for k, v in d.items()}
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in SECTIONS:
            raise _unknown("section", section, list(SECTIONS))
        out.setdefault(section, {})[key] = value
    return out


def read_config_file(path: str | Path, extra_sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """The sections of YAML file `path` as a nested dict (not yet validated), or one ConfigError line for
    every way the file can be wrong: a folder, missing, unreadable, not UTF-8, bad YAML, not a mapping of
    known sections (`extra_sections`: more allowed names, such as passkey.py's `passkey`)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder: give a YAML file (e.g. configs/tiny.yaml)")
    if not path.exists():
        raise ConfigError(f"config file {path} not found")
    if not path.is_file():  # /dev/zero would be read forever
        raise ConfigError(f"config file {path} is not a regular file (a device, pipe or socket): give a YAML "
                          "file (e.g. configs/tiny.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start})") from err
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from err
    d = _yaml_load(text, f"config file {path}") or {}
    _check_sections(d, f"config file {path}: ", extra_sections)
    return d


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """The config of YAML file `path` (None: all defaults) with `--set` overrides applied."""
    d = read_config_file(path) if path is not None else {}
    return config_from_dict(apply_overrides(d, overrides or []))


def load_training_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """`load_config` for a training run: model.vocab_size is the size of the vocabulary of the prepared
    corpus that the data section names, set before the model section is validated. vocab_size always
    comes from the corpus, so a config needs no placeholder for its adaptive cutoffs to validate, and
    cutoffs that do not fit are one line naming the corpus's vocabulary size. When the corpus is not
    prepared yet, the rest of the config is checked first, then one line says how to prepare it
    (`--protocol words` for a word-level model's own text); before any run folder is made."""
    d = apply_overrides(read_config_file(path) if path is not None else {}, overrides or [])
    _check_sections(d)
    data = _build_section("data", d.get("data") or {})
    folder = Path(data.data_dir) / data.dataset
    model = d.get("model") or {}
    try:
        vocab = load_vocab(folder, words=word_level(model))
    except CorpusNotFoundError:
        config_from_dict(d, (str(folder), None))  # a mistake in the config is named first
        raise
    except DataError:  # a malformed corpus: the trainer names the file and how to re-make it
        return config_from_dict(d, (str(folder), None))
    if vocab.kind != "word" and config_from_dict(d, (str(folder), None)).model.adaptive:  # valid values first
        raise ConfigError(
            f"{folder} is a {vocab.kind}-level corpus ({len(vocab)} symbols) and model.adaptive is for word "
            "vocabularies: train it with a byte-level config (e.g. --config tiny), or --set "
            "model.adaptive=false"
        )
    return config_from_dict(d, (str(folder), len(vocab)))


def word_level(model: dict[str, Any]) -> bool:
    """Whether a config's model section is for words: adaptive softmax, or more symbols than bytes."""
    size = model.get("vocab_size")
    return model.get("adaptive") is True or (isinstance(size, int) and size > 256)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loadable again with `load_config`), atomically."""
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
