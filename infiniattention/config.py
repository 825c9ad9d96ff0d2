"""Model configuration: one dataclass, validated where the values enter."""

from __future__ import annotations

from dataclasses import dataclass, field

from .memory import FEATURES, KEY_NORMS, NORMALIZERS, MemoryOptions

MEMORY_MODES = ("infini", "xl", "none")
UPDATE_RULES = ("delta", "linear")
MEMORY_OPTIONS = ("normalizer", "feature", "key_norm", "write_gate")  # infini mode only
# The words of a memory label (ModelConfig.memory_label) and the option each one sets.
LABEL_WORDS = {"gate": ("write_gate", True), "corrected": ("normalizer", "corrected"),
               "deltanet": ("normalizer", "none"), "dpfp": ("feature", "dpfp"), "l2": ("key_norm", "l2")}
POSITIONAL = ("rope", "xl", "none")
ACTIVATIONS = ("relu", "gelu")


@dataclass
class ModelConfig:
    """Shape and behaviour of an :class:`InfiniTransformerLM`.

    Defaults are the Transformer-XL enwik8 base shape (12 x 512, 8 heads of 64).
    """

    vocab_size: int = 256
    """Number of token ids (set from the dataset's vocabulary by the trainer)."""
    n_layer: int = 12
    """Number of Transformer blocks."""
    d_model: int = 512
    """Width of the residual stream."""
    n_head: int = 8
    """Attention heads per layer."""
    d_head: int = 64
    """Width of one head (keys, values and queries)."""
    d_inner: int = 2048
    """Hidden width of the position-wise feed-forward network."""
    segment_len: int = 512
    """N: tokens per segment. Local attention never crosses a segment boundary."""
    memory: str = "infini"
    """infini: compressive memory (the paper); xl: Transformer-XL cache of `mem_len` hidden states;
    none: local attention only."""
    update: str = "delta"
    """Memory write rule: delta (eq. 9) or linear (eq. 8). Infini mode only."""
    normalizer: str = "sum"
    """Memory normaliser z: sum (eq. 8, the paper), corrected (ARMT: z grows by gamma phi(K),
    gamma = clip(1 - z phi(K) / |phi(K)|^2, 0, 1), detached; needs update delta) or none (DeltaNet:
    no z, the read is phi(Q) M and the delta rule writes token by token, computed per segment in the
    chunkwise WY form; needs update delta and key_norm l2). Infini mode only."""
    feature: str = "elu"
    """Feature map of the memory's queries and keys: elu (the paper's ELU + 1) or dpfp (Schlag et al.
    2021, nu = 3: 6 x d_head features, so M has 6 x d_head rows). Infini mode only."""
    key_norm: str = "none"
    """none, or l2: the memory's query and key features are L2-normalised. Infini mode only."""
    write_gate: bool = False
    """A learned write strength beta = sigmoid(w . x + b) per head and token scales each token's write
    into M and z, so the model can learn what not to write. Infini mode only."""
    pos: str = "rope"
    """Positions of the local branch: rope, xl (Transformer-XL relative) or none. Forced to xl when
    memory is xl."""
    mem_len: int = 512
    """Hidden states cached per layer in xl mode (ignored otherwise); 0: no cache (local attention
    with xl positions). The cache is stop-gradient, as in Transformer-XL."""
    clamp_len: int = -1
    """Relative distances beyond this use the same xl encoding (-1: no clamp)."""
    same_length: bool = False
    """xl mode only: every query sees the same number of keys, the last `mem_len` (itself included),
    Transformer-XL's `same_length` attention mask (its enwik8 test setting)."""
    untie_r: bool = False
    """xl positions: one pair of u, v biases per layer instead of one pair shared by every layer
    (Transformer-XL's default, and ours, is shared)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention output and FFN."""
    dropatt: float = 0.0
    """Dropout on attention probabilities (local branch)."""
    pre_lnorm: bool = False
    """Pre-LayerNorm blocks (default: post-LN as in Transformer-XL)."""
    activation: str = "relu"
    """FFN activation: relu (Transformer-XL) or gelu."""
    gate_init: float = 0.0
    """Initial value of each head's gate logit b (eq. 10); 0 gives sigmoid(b) = 0.5."""
    eps: float = 1e-6
    """Floor for every memory denominator (den.clamp_min(eps))."""
    adaptive: bool = False
    """Adaptive input embedding and adaptive softmax (word-level vocabularies)."""
    cutoffs: list[int] = field(default_factory=list)
    """Adaptive softmax cluster boundaries, strictly increasing and below vocab_size."""
    div_val: int = 1
    """Adaptive embedding width divisor per cluster."""
    tie_weights: bool = True
    """Tie the output layer to the input embedding."""
    init_std: float = 0.02
    """Standard deviation of the normal weight initialisation."""
    checkpoint_segments: bool = False
    """Gradient checkpointing: recompute each block's activations in the backward pass."""
    fast_dropout: bool = False
    """Dropout masks from 16-bit uniform numbers, three per generator call (infiniattention/dropout.py):
    p rounded to a multiple of 2**-16, other masks than torch's for the same seed; cheaper on CPUs."""

    def __post_init__(self) -> None:
        self.validate()

    def memory_label(self) -> str:
        """The memory in one word for tables: ``xl``, ``none``, ``infini`` (the paper's memory) or
        ``infini`` with its options, e.g. ``infini+gate+corrected+dpfp+l2``."""
        if self.memory != "infini":
            return self.memory
        words = [w for w, (name, value) in LABEL_WORDS.items() if getattr(self, name) == value]
        return "+".join(["infini", *words])


    def validate(self) -> None:
        """Raise ValueError naming the field and the rule it breaks."""
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "d_head", "d_inner", "segment_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        _choice("memory", self.memory, MEMORY_MODES)
        _choice("update", self.update, UPDATE_RULES)
        _choice("normalizer", self.normalizer, NORMALIZERS)
        _choice("feature", self.feature, FEATURES)
        _choice("key_norm", self.key_norm, KEY_NORMS)
        if not isinstance(self.write_gate, bool):
            raise ValueError(f"model.write_gate must be true or false, got {self.write_gate!r}")
        if self.memory != "infini":
            paper = MemoryOptions()
            for name in MEMORY_OPTIONS:
                if getattr(self, name) != getattr(paper, name):
                    raise ValueError(f"model.{name} is an option of the compressive memory (memory infini); "
                                     f"it cannot be set with memory {self.memory}: remove it or set it to "
                                     f"{getattr(paper, name)!r}")
        if self.normalizer == "corrected" and self.update != "delta":
            raise ValueError("model.normalizer corrected needs model.update delta: with the linear rule M "
                             "grows without bound while the corrected z stops growing")
        if self.normalizer == "none" and (self.update != "delta" or self.key_norm != "l2"):
            raise ValueError("model.normalizer none (DeltaNet's memory) needs model.update delta and "
                             f"model.key_norm l2, got update {self.update} and key_norm {self.key_norm}")
        _choice("pos", self.pos, POSITIONAL)
        _choice("activation", self.activation, ACTIVATIONS)
        if self.memory == "xl" and self.pos != "xl":
            self.pos = "xl"  # Transformer-XL's cache is defined with its relative encoding
        if self.memory == "xl" and (isinstance(self.mem_len, bool) or not isinstance(self.mem_len, int)
                                    or self.mem_len < 0):
            raise ValueError(f"model.mem_len must be an integer >= 0 in xl mode, got {self.mem_len!r}")
        if self.same_length and self.memory != "xl":
            raise ValueError(f"model.same_length applies to memory xl only, got memory {self.memory}")
        if self.same_length and self.mem_len == 0:
            raise ValueError("model.same_length needs mem_len > 0 (each query sees the last mem_len keys)")
        if self.pos == "rope" and self.d_head % 2:
            raise ValueError(f"model.d_head must be even for rope positions, got {self.d_head}")
        if self.pos == "xl" and self.d_model % 2:
            raise ValueError(f"model.d_model must be even for xl positions, got {self.d_model}")
        for name in ("dropout", "dropatt"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {value!r}")
        if self.eps <= 0:
            raise ValueError(f"model.eps must be > 0, got {self.eps!r}")
        if self.adaptive:
            cuts = list(self.cutoffs)
            if any(b <= a for a, b in zip(cuts[:-1], cuts[1:], strict=True)) or (cuts and cuts[0] <= 0):
                raise ValueError(f"model.cutoffs must be strictly increasing positive integers, got {cuts}")
            if cuts and cuts[-1] >= self.vocab_size:
                raise ValueError(
                    f"model.cutoffs must lie below vocab_size={self.vocab_size}, got {cuts}: give smaller "
                    "ones or a full softmax (adaptive=False)"
                )
            if self.div_val < 1:
                raise ValueError(f"model.div_val must be >= 1, got {self.div_val}")


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"model.{name} must be one of {', '.join(valid)}; got {value!r}")


def memory_settings(label: str) -> dict[str, object]:
    """The ModelConfig fields of a memory label, the inverse of ``ModelConfig.memory_label``:
    ``"infini+gate+l2"`` -> ``{"memory": "infini", "write_gate": True, "key_norm": "l2"}``."""
    mode, *words = label.split("+")
    if mode not in MEMORY_MODES or (words and mode != "infini") or len(set(words)) != len(words) \
            or any(w not in LABEL_WORDS for w in words):
        raise ValueError(f"unknown memory {label!r}: use infini, xl, none, or infini+OPTION+... with OPTION "
                         f"in {', '.join(LABEL_WORDS)}")
    return {"memory": mode, **dict(LABEL_WORDS[w] for w in words)}
