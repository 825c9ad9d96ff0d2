"""Passkey retrieval instances (Mohtashami & Jaggi 2023, the long-context test of Infini-attention §4.2).

An instance is, in the model's own tokens (bytes or characters):

    PREAMBLE  filler[:p]  KEY_SENTENCE  filler[p:F]  QUESTION  ANSWER

with the filler sentence block repeated and cut to ``F`` tokens so that the whole instance has exactly
``length`` tokens, the key sentence inserted at the sentence boundary of the filler nearest to
``depth * F`` (depth 0: right after the preamble, the key is farthest from the question; depth 1: right
before the question), and ``ANSWER`` the five key digits. With a ``Haystack`` of ordinary text (a
prepared split) the filler is ``F`` consecutive tokens of that text from a seeded start instead, and
the key sentence goes in at the word boundary nearest to ``depth * F``. The question ends with "The
pass key is " (trailing space), so the next five tokens are exactly the digits and only they are
scored.

An instance is a description (a few ints and the key), not a token array: :meth:`PasskeyInstance.chunks`
produces the tokens piece by piece, so a 1M-token instance streams through a model in bounded memory,
and :meth:`PasskeyInstance.tokens` (the same tokens, materialised) is for short instances and tests.
Instances are a pure function of (vocabulary, length, depth, seed, haystack); the key depends on the
seed alone, so the filler and the text haystack are compared on the same keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .vocab import Vocab

PREAMBLE = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there. "
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
KEY_SENTENCE = "The pass key is {key}. Remember it. {key} is the pass key. "
QUESTION = "What is the pass key? The pass key is "
N_DIGITS = 5
DIGITS = "0123456789"

ANSWER, COPY = 1, 2  # roles of scored targets in a training lane

_SUFFIXES = {"": 1, "k": 1024, "m": 1024**2}


class PasskeyError(ValueError):
    """A passkey argument or vocabulary the user must fix (the message is one line)."""


def parse_length(text: str) -> int:
    """'1k' -> 1024, '1m' -> 1048576, '512' -> 512 (binary suffixes k, m; case-insensitive)."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    suffix = m.group(2).lower() if m else None
    if m is None or suffix not in _SUFFIXES:
        raise PasskeyError(f"bad length {text!r}: use an integer with an optional suffix k (x1024) or m "
                           "(x1048576), e.g. 2k or 1m")
    value = int(m.group(1)) * _SUFFIXES[suffix]
    if value <= 0:
        raise PasskeyError(f"bad length {text!r}: must be positive")
    return value


def parse_depth(text: str | float) -> float:
    """A depth in [0, 1] (0: key at the start of the filler, 1: at its end)."""
    try:
        value = float(text)
    except ValueError:
        raise PasskeyError(f"bad depth {text!r}: must be a number in [0, 1]") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise PasskeyError(f"bad depth {text!r}: must be in [0, 1]")
    return value


class PasskeyTokens:
    """The fixed pieces of the task encoded once in a vocabulary (byte or char level, with digits)."""

    def __init__(self, vocab: Vocab) -> None:
        if vocab.kind not in ("byte", "char"):
            raise PasskeyError(f"passkey needs a byte- or character-level vocabulary, got a {vocab.kind} "
                               "vocabulary")
        self.vocab = vocab
        self.digit_ids = np.asarray(self._exact("0123456789"), dtype=np.int64)  # [10]
        self.preamble = self._exact(PREAMBLE)
        self.filler = self._exact(FILLER)
        self.question = self._exact(QUESTION)
        key_parts = KEY_SENTENCE.split("{key}")  # before, between, after the two copies of the key
        self.key_parts = [self._exact(p) for p in key_parts]
        # Offsets in the filler block where a sentence starts ("The grass...", "The sky...", ...).
        self.sentence_starts = np.asarray([0] + [m.end() for m in re.finditer(r"\. ", FILLER)][:-1])
        # Word boundaries of a text haystack: after a space or a newline (when the vocabulary has one).
        self.space_ids = np.asarray([i for i in (self._lookup(" "), self._lookup("\n")) if i >= 0])
        self.fixed_len = (len(self.preamble) + sum(map(len, self.key_parts)) + 2 * N_DIGITS
                          + len(self.question) + N_DIGITS)

    def _lookup(self, char: str) -> int:
        """The id of one character, -1 when the vocabulary lacks it."""
        if self.vocab.kind == "byte":
            return int(self.vocab.byte_table()[ord(char)])
        return int(self.vocab.index.get(char, -1))

    def _exact(self, text: str) -> np.ndarray:
        """Ids of `text`, one per character; an error when the vocabulary lacks one of them."""
        if self.vocab.kind == "byte":
            ids = self.vocab.byte_table()[np.frombuffer(text.encode("utf-8"), dtype=np.uint8)]
            missing = sorted({text[i] for i in np.flatnonzero(ids < 0)})
        else:
            missing = sorted({c for c in text if c not in self.vocab.index})
            ids = np.asarray([self.vocab.index.get(c, -1) for c in text], dtype=np.int64)
        if missing:
            what = "the digits 0-9" if any(c in DIGITS for c in missing) else "the task's characters"
            raise PasskeyError(f"the vocabulary lacks {what} (missing {''.join(missing)!r}): passkey needs "
                               "a byte or character vocabulary with digits and English punctuation")
        return ids.astype(np.int64)


@dataclass(frozen=True)
class Haystack:
    """Ordinary text that replaces the repeated filler: the token ids of a prepared split (for example
    ``corpus.split("valid")``). An instance takes ``F`` consecutive tokens from a seeded start; only an
    instance longer than the text wraps around its end (``wraps``)."""

    name: str
    """What the text is, for tables and JSON (e.g. "enwik8-sample/valid")."""
    tokens: np.ndarray = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.tokens) == 0:
            raise PasskeyError(f"the haystack text {self.name} is empty")

    def wraps(self, filler_len: int) -> bool:
        """True when ``filler_len`` tokens of haystack repeat some of the text."""
        return filler_len > len(self.tokens)


@dataclass(frozen=True)
class PasskeyInstance:
    """One instance: ``length`` tokens; the answer is the last five; ``key_pos`` is the index of the
    first digit of the key's first copy; ``depth`` the realised depth ``filler_before / filler_len``.
    ``haystack`` (None: the filler sentences) and ``hay_start``: where the instance's text starts."""

    tok: PasskeyTokens
    length: int
    key: str
    filler_before: int
    filler_len: int
    haystack: Haystack | None = None
    hay_start: int = 0

    @property
    def depth(self) -> float:
        return self.filler_before / self.filler_len if self.filler_len else 0.0

    @property
    def key_pos(self) -> int:
        return len(self.tok.preamble) + self.filler_before + len(self.tok.key_parts[0])

    @property
    def copy_pos(self) -> int:
        """Index of the first digit of the key's second copy ("... Remember it. NNNNN is the pass key.")."""
        return self.key_pos + N_DIGITS + len(self.tok.key_parts[1])

    @property
    def answer_start(self) -> int:
        """Index of the first answer digit (the last five tokens)."""
        return self.length - N_DIGITS

    @property
    def prompt_len(self) -> int:
        return self.answer_start

    def answer_ids(self) -> np.ndarray:
        """Token ids of the five key digits."""
        return self.tok.digit_ids[[int(c) for c in self.key]]

    def _pieces(self) -> list[tuple[str, int, np.ndarray | None]]:
        """(kind, length, ids) in order; filler pieces carry their starting offset in the block cycle."""
        t, key = self.tok, self.answer_ids()
        before, after = self.filler_before, self.filler_len - self.filler_before
        start = self.hay_start
        return [
            ("ids", len(t.preamble), t.preamble),
            ("filler", before, np.asarray(start)),
            ("ids", len(t.key_parts[0]), t.key_parts[0]),
            ("ids", N_DIGITS, key),
            ("ids", len(t.key_parts[1]), t.key_parts[1]),
            ("ids", N_DIGITS, key),
            ("ids", len(t.key_parts[2]), t.key_parts[2]),
            ("filler", after, np.asarray(start + before)),
            ("ids", len(t.question), t.question),
            ("ids", N_DIGITS, key),
        ]

    def chunks(self, chunk_len: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Tokens ``[start, stop)`` as int64 arrays of ``chunk_len`` (the last may be shorter); never
        holds more than one chunk, so any length streams."""
        stop = self.length if stop is None else stop
        if chunk_len <= 0 or not 0 <= start <= stop <= self.length:
            raise ValueError(f"bad chunk request: chunk_len={chunk_len}, [{start}, {stop}) of {self.length}")
        for a in range(start, stop, chunk_len):
            yield self._slice(a, min(a + chunk_len, stop))

    def _slice(self, a: int, b: int) -> np.ndarray:
        out = np.empty(b - a, dtype=np.int64)
        pos = 0  # start of the current piece in the instance
        cycle = self.tok.filler if self.haystack is None else self.haystack.tokens
        for kind, n, ids in self._pieces():
            lo, hi = max(a, pos), min(b, pos + n)
            if lo < hi:
                if kind == "ids":
                    out[lo - a:hi - a] = ids[lo - pos:hi - pos]
                else:  # filler or text: position i of this piece is cycle[(offset + i) % len(cycle)]
                    idx = int(ids) + np.arange(lo - pos, hi - pos)
                    out[lo - a:hi - a] = cycle[idx % len(cycle)]
            pos += n
        return out

    def tokens(self) -> np.ndarray:
        """The whole instance, materialised (for short instances)."""
        return self._slice(0, self.length)


def make_instance(tok: PasskeyTokens, length: int, depth: float, seed: int,
                  key: str | None = None, haystack: Haystack | None = None) -> PasskeyInstance:
    """The instance of ``length`` tokens with its key at ``depth``; the key is drawn from ``seed``
    (uniform over the 10^5 keys) unless given. With a ``haystack`` the filler is a span of its text
    starting at an offset drawn from ``(seed, 1)``, so the key stays the one of the filler instance."""
    depth = parse_depth(depth)
    filler_len = length - tok.fixed_len
    if filler_len < 0:
        raise PasskeyError(f"length {length} is too short: a passkey instance needs at least {tok.fixed_len} "
                           "tokens")
    if key is None:
        key = uniform_key(np.random.default_rng(seed))
    elif len(key) != N_DIGITS or not key.isdigit():
        raise PasskeyError(f"a pass key is {N_DIGITS} digits, got {key!r}")
    if haystack is None:
        return PasskeyInstance(tok, length, key, _snap(tok, depth * filler_len, filler_len), filler_len)
    n = len(haystack.tokens)
    start = int(np.random.default_rng([seed, 1]).integers(0, max(n - filler_len, 0) + 1))
    before = _snap_to_word(tok, haystack, start, depth * filler_len, filler_len)
    return PasskeyInstance(tok, length, key, before, filler_len, haystack, start)


def uniform_key(rng: np.random.Generator) -> str:
    """A key drawn uniformly from the 10^5 five-digit keys."""
    return "".join(str(d) for d in rng.integers(0, 10, N_DIGITS))


def is_ambiguous(key: str) -> bool:
    """True when a digit occurs twice among the first four, so "the digit after this one" has two
    answers: the keys that a copy circuit keyed on the previous token alone gets wrong (71665 -> 71656)."""
    head = key[:N_DIGITS - 1]
    return len(set(head)) < len(head)


def ambiguous_key(rng: np.random.Generator) -> str:
    """A key drawn uniformly from the ambiguous keys (about half of all keys; see `is_ambiguous`)."""
    while True:
        key = uniform_key(rng)
        if is_ambiguous(key):
            return key


def _snap(tok: PasskeyTokens, target: float, filler_len: int) -> int:
    """The sentence boundary of the filler (or its end) nearest to ``target`` tokens into it."""
    period = len(tok.filler)
    base = int(target // period) * period
    cands = np.concatenate([base - period + tok.sentence_starts, base + tok.sentence_starts,
                            base + period + tok.sentence_starts, [filler_len]])
    cands = cands[(cands >= 0) & (cands <= filler_len)]
    return int(cands[np.argmin(np.abs(cands - target))])


def _snap_to_word(tok: PasskeyTokens, haystack: Haystack, start: int, target: float, filler_len: int,
                  reach: int = 64) -> int:
    """The word boundary of the haystack's span nearest to ``target`` tokens into it (a position right
    after a space or newline, or either end), searched within ``reach`` tokens; else ``target`` itself."""
    t = min(max(int(round(target)), 0), filler_len)
    lo, hi = max(t - reach, 1), min(t + reach, filler_len - 1)
    cands = [0, filler_len] if abs(t) <= reach or filler_len - t <= reach else []
    if hi >= lo:
        pos = np.arange(lo, hi + 1)
        before = haystack.tokens[(start + pos - 1) % len(haystack.tokens)]
        cands += pos[np.isin(before, tok.space_ids)].tolist()
    if not cands:
        return t
    cands = np.asarray(cands)
    return int(cands[np.argmin(np.abs(cands - t))])


def answer_mask(inst: PasskeyInstance) -> np.ndarray:
    """Bool ``[length - 1]`` over the *targets* of ``x = tokens[:-1], y = tokens[1:]``: True exactly
    at the five answer digits (the only scored targets)."""
    mask = np.zeros(inst.length - 1, dtype=bool)
    mask[inst.answer_start - 1:] = True
    return mask


# ------------------------------------------------------------------------------------------------
# Training batches: short instances mixed with ordinary text.


@dataclass
class PasskeyTaskConfig:
    """The `passkey:` section of a passkey training config (scripts/passkey.py train)."""

    text_frac: float = 0.0
    """Fraction of the lanes of every batch that hold ordinary training text instead of an instance."""
    all_weight: float = 0.0
    """Loss = mean NLL of the answer digits + copy_weight x mean NLL of the key's second copy +
    all_weight x mean NLL of every target (text lanes, filler and answers alike)."""
    copy_weight: float = 0.0
    """Weight of the key's second copy inside the key sentence, which a local copy (induction) circuit
    predicts from the first copy 20 tokens earlier: the same circuit, read through the memory, answers
    the question (0: not scored)."""
    min_len: int | None = None
    """Instance lengths are drawn uniformly from [min_len, data.tgt_len + 1]; the rest of a lane after a
    shorter instance is ordinary text (None: every instance fills its lane)."""
    depth_min: float = 0.0
    """Smallest depth drawn (0: the key right after the preamble, as far from the question as possible)."""
    depth_max: float = 1.0
    """Largest depth drawn (1: the key right before the question)."""
    curriculum_steps: int = 0
    """Curriculum over the key's distance: the lowest depth drawn ramps linearly from `curriculum_start`
    down to `depth_min` over this many steps (0: no curriculum)."""
    curriculum_start: float = 0.9
    """Lowest depth drawn at step 0 when `curriculum_steps` > 0 (the key close to the question)."""
    repeat_frac: float = 0.0
    """Fraction of the instances whose key is drawn from the ambiguous keys only (a digit repeated among
    the first four, `is_ambiguous`); the rest are uniform, which already gives ~50 % ambiguous keys.
    Oversamples the keys that need more than the previous token to be copied in order."""
    end_frac: float = 0.0
    """Fraction of the instances whose key sentence is put at the highest depth drawn (`depth_max`; 1:
    right before the question); the rest keep uniform depths, which put it there in ~0.7 % of instances
    of 260-2,049 tokens. Depth 1 is the weakest depth of every CPU run (docs/passkey.md): the key is
    one segment back, and the question's own segment holds part of the key's second copy, a local
    fragment that competes with the memory's read of the key."""
    haystack_text_frac: float = 0.0
    """Fraction of the instances whose haystack is ordinary training text (a span of the training
    split, as `scripts/passkey.py eval --haystack text` evaluates on held-out text) instead of the
    filler sentences; validation then gives every other instance a haystack of validation text."""
    write_penalty: float = 0.0
    """Weight of the mean write gate (model.write_gate) in the loss: an L1 prior on the memory's writes,
    so that what the answer does not need (filler, ordinary text) is written ever more weakly. 0: none.
    Its gradient through the sigmoid vanishes as a gate closes (d beta / d logit = beta (1 - beta)), so
    it cannot take a write much below ~1e-2; `write_logit_penalty` can."""
    write_logit_penalty: float = 0.0
    """Weight of the mean of ``max(logit - write_logit_floor, 0)`` over every token's write-gate logit
    (model.write_gate) in the loss: a constant push down on every logit above the floor, which takes
    the writes the answer does not need to ``sigmoid(floor)`` (6e-6 at -12) rather than to ~1e-2, while
    the answer's loss keeps the key sentence's writes open. 0: none."""
    write_logit_floor: float = -12.0
    """The logit below which `write_logit_penalty` stops pushing (sigmoid(-12) = 6.1e-6)."""
    write_logit_penalty_from: int = 0
    """First step of `write_logit_penalty`: a gate pushed shut before the retrieval circuit has
    formed gives the answer's loss no gradient to open it again on the key sentence, so the CPU
    recipe's stage 1 starts it after its curriculum."""
    state_passing: float = 0.0
    """State passing (Buitrago Ruiz & Gu 2025): the probability that a lane's memory is carried,
    detached, into its next instance instead of starting empty. Each lane keeps its state from step to
    step and resets with probability 1 - state_passing per instance, so the memory an instance starts
    from has already streamed a geometric number of earlier lanes (instances with other keys, and
    text): mean ``data.tgt_len * p / (1 - p)`` tokens. 0: every instance starts from an empty memory
    (the default). Needs model.memory infini and data.tgt_len a multiple of model.segment_len.
    Validation and evaluation always start from an empty memory."""
    state_passing_from: int = 0
    """First step at which a lane may carry its memory (state passing as post-training, as in Buitrago
    Ruiz & Gu 2025): memories full of other instances' keys from the first step keep the retrieval
    circuit from forming (measured: stage 1 with state passing from step 0 stayed at chance for 870
    steps), so the CPU recipe's stage 1 starts it after its curriculum."""
    seed: int = 0
    """Seed of the instances and text offsets: lane g of step t draws from default_rng([seed, t, g])."""
    val_instances: int = 32
    """Held-out instances at the training length scored at every validation (teacher-forced)."""

    def __post_init__(self) -> None:
        for name in ("text_frac", "repeat_frac", "end_frac", "haystack_text_frac", "depth_min", "depth_max",
                     "curriculum_start"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise PasskeyError(f"passkey.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.depth_min > self.depth_max:
            raise PasskeyError(f"passkey.depth_min {self.depth_min} > passkey.depth_max {self.depth_max}")
        if min(self.all_weight, self.copy_weight, self.curriculum_steps, self.val_instances,
               self.write_penalty, self.write_logit_penalty) < 0:
            raise PasskeyError("passkey.all_weight, copy_weight, curriculum_steps, val_instances, "
                               "write_penalty and write_logit_penalty must be >= 0")
        if not 0.0 <= self.state_passing <= 1.0:
            raise PasskeyError(f"passkey.state_passing must be in [0, 1], got {self.state_passing!r}")
        if min(self.state_passing_from, self.write_logit_penalty_from) < 0:
            raise PasskeyError("passkey.state_passing_from and write_logit_penalty_from must be >= 0")
        if self.min_len is not None and self.min_len <= 0:
            raise PasskeyError(f"passkey.min_len must be positive, got {self.min_len}")

    def depth_range(self, step: int) -> tuple[float, float]:
        """(lowest, highest) depth drawn at `step`, after the distance curriculum."""
        lo = self.depth_min
        if self.curriculum_steps and step < self.curriculum_steps:
            start = max(self.curriculum_start, self.depth_min)
            lo = start + (self.depth_min - start) * step / self.curriculum_steps
        return min(lo, self.depth_max), self.depth_max


@dataclass
class PasskeyBatch:
    """Inputs and targets ``[B, T]``, and the bool masks ``[B, T]`` of the targets that are answer digits
    and digits of the key's second copy. Every lane starts a new document. ``carry [B]``: the lanes
    whose memory is carried over from the previous batch (state passing); the trainer resets the
    others. ``age [B]``: tokens the lane's memory has streamed before this batch (0 when reset)."""

    x: torch.Tensor
    y: torch.Tensor
    answer: torch.Tensor
    copy: torch.Tensor
    carry: torch.Tensor
    age: np.ndarray


class PasskeyBatches:
    """An endless, seeded, resumable source of passkey training batches.

    Every batch gives each lane a fresh document of ``tgt_len + 1`` tokens: an instance (of a length
    drawn from ``[min_len, tgt_len + 1]``, followed by ordinary text when shorter) or, with probability
    ``text_frac``, a span of ordinary text at a random offset. Lane ``g`` (global index) of step ``t``
    is a pure function of ``(seed, t, g)``, so the position is just the step and a resume is exact;
    rank ``r`` of ``world_size`` yields the lanes ``[r * B / W, (r + 1) * B / W)``.
    """

    def __init__(self, tok: PasskeyTokens, text: np.ndarray, task: PasskeyTaskConfig, batch_size: int,
                 tgt_len: int, *, rank: int = 0, world_size: int = 1, device: str = "cpu") -> None:
        self.tok, self.text, self.task = tok, text, task
        self.batch_size, self.tgt_len = batch_size, tgt_len
        self.local = batch_size // world_size
        self.first_lane = rank * self.local
        self.device = device
        self.step = 0
        self.max_len = tgt_len + 1
        self.min_len = min(task.min_len or self.max_len, self.max_len)
        if self.min_len < tok.fixed_len:
            raise PasskeyError(f"instances of {self.min_len} tokens are too short: the task needs at least "
                               f"{tok.fixed_len} (raise data.tgt_len or passkey.min_len)")
        if len(text) <= self.max_len:
            raise PasskeyError(f"the training text ({len(text)} tokens) is shorter than one lane "
                               f"({self.max_len})")
        self.haystack = Haystack("train", text)
        self.ages = np.zeros(self.local, dtype=np.int64)  # tokens in each local lane's memory

    def carries(self, step: int, g: int) -> bool:
        """Whether global lane g keeps its memory from step - 1 into step (state passing), from its own
        generator, so that the lanes' instances are the same with and without state passing."""
        p = self.task.state_passing
        return step > 0 and step >= self.task.state_passing_from and p > 0 and \
            bool(np.random.default_rng([self.task.seed, step, g, 7]).random() < p)

    def age(self, step: int, g: int) -> int:
        """Tokens that global lane g's memory has streamed before step (the consecutive carries)."""
        n = 0
        while step > 0 and self.carries(step, g):
            n, step = n + self.tgt_len, step - 1
        return n

    def lane(self, step: int, g: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens ``[tgt_len + 1]`` of global lane g, and the role of each of its ``tgt_len`` targets
        (int8: ANSWER, COPY, else 0)."""
        rng = np.random.default_rng([self.task.seed, step, g])
        ids = np.empty(self.max_len, dtype=np.int64)
        role = np.zeros(self.max_len - 1, dtype=np.int8)
        n = 0
        if rng.random() >= self.task.text_frac:
            length = int(rng.integers(self.min_len, self.max_len + 1))
            lo, hi = self.task.depth_range(step)
            depth, key_seed = float(rng.uniform(lo, hi)), int(rng.integers(2**31))
            # Draw from rng only when repeat_frac / end_frac are set, so that older configs keep their
            # exact lanes.
            hard = self.task.repeat_frac > 0 and rng.random() < self.task.repeat_frac
            key = ambiguous_key(rng) if hard else None
            if self.task.end_frac > 0 and rng.random() < self.task.end_frac:
                depth = hi
            text_hay = self.task.haystack_text_frac > 0 and rng.random() < self.task.haystack_text_frac
            inst = make_instance(self.tok, length, depth, key_seed, key=key,
                                 haystack=self.haystack if text_hay else None)
            ids[:length] = inst.tokens()
            role[inst.answer_start - 1:length - 1] = ANSWER
            role[inst.copy_pos - 1:inst.copy_pos - 1 + N_DIGITS] = COPY
            n = length
        if n < self.max_len:
            start = int(rng.integers(0, len(self.text) - (self.max_len - n) + 1))
            ids[n:] = self.text[start:start + self.max_len - n]
        return ids, role

    def __iter__(self) -> Iterator[PasskeyBatch]:
        while True:
            lanes = [self.lane(self.step, self.first_lane + i) for i in range(self.local)]
            carry = np.asarray([self.carries(self.step, self.first_lane + i) for i in range(self.local)])
            self.ages = np.where(carry, self.ages + self.tgt_len, 0)
            self.step += 1  # advance before yielding: a state_dict taken after this batch resumes at the next
            ids = torch.from_numpy(np.stack([a for a, _ in lanes])).to(self.device)
            role = torch.from_numpy(np.stack([r for _, r in lanes])).to(self.device)
            x, y = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
            yield PasskeyBatch(x, y, role == ANSWER, role == COPY, torch.from_numpy(carry).to(self.device),
                               self.ages.copy())

    def state_dict(self) -> dict:
        """The position (plain ints, `weights_only`-safe) and the shape it belongs to."""
        return {"step": int(self.step), "batch_size": int(self.batch_size), "tgt_len": int(self.tgt_len),
                "seed": int(self.task.seed)}

    def load_state_dict(self, d: dict) -> None:
        mine = {"batch_size": self.batch_size, "tgt_len": self.tgt_len, "seed": self.task.seed}
        for key, value in mine.items():
            if key not in d:
                raise ValueError(f"the checkpoint's batch source has no {key!r}: it was not written by "
                                 "scripts/passkey.py train")
            if int(d[key]) != value:
                raise ValueError(f"the checkpoint's passkey batches have {key}={d[key]}: resume with the "
                                 "same data.batch_size, data.tgt_len and passkey.seed")
        self.step = int(d["step"])
        # the ages are a function of the step: the batch before `step` left these (0 without carries)
        self.ages = np.asarray([self.age(self.step - 1, self.first_lane + i) for i in range(self.local)],
                               dtype=np.int64)
