"""Vocabularies: the map between token ids and bytes, characters or words.

Three kinds share one class:
- "byte": symbols are byte values 0..255 (enwik8, user text). Text is utf-8 encoded before lookup and
  ids are decoded back through utf-8 with errors="replace" (a cut can split a multi-byte character).
- "char": symbols are one-character strings (text8).
- "word": symbols are whitespace-free strings; `<eos>` ends every line (wikitext).

Ids are positions in `symbols`. The whole vocabulary is `{"kind": ..., "symbols": [...]}`, which is
exactly what `vocab.json` holds and what `digest()` hashes.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterable, Sequence

import numpy as np

EOS = "<eos>"
UNK = "<unk>"
KINDS = ("byte", "char", "word")


class Vocab:
    """An ordered list of symbols; the id of a symbol is its index."""

    def __init__(self, kind: str, symbols: Sequence[int | str]) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown vocabulary kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        self.kind = kind
        self.symbols: list = list(symbols)
        self.index: dict = {s: i for i, s in enumerate(self.symbols)}
        if len(self.index) != len(self.symbols):
            raise ValueError("vocabulary symbols must be unique")
        if kind == "byte" and not all(isinstance(s, int) and 0 <= s < 256 for s in self.symbols):
            raise ValueError("a byte vocabulary holds integers in [0, 256)")
        self.unk_id: int | None = self.index.get(UNK) if kind == "word" else None

    def __len__(self) -> int:
        return len(self.symbols)

    def __repr__(self) -> str:
        return f"Vocab(kind={self.kind!r}, size={len(self)})"

    def byte_table(self) -> np.ndarray:
        """For a byte vocabulary: an int64 array mapping byte value -> id, -1 where absent."""
        if self.kind != "byte":
            raise TypeError("byte_table() is for byte vocabularies only")
        table = np.full(256, -1, dtype=np.int64)
        table[np.asarray(self.symbols, dtype=np.int64)] = np.arange(len(self))
        return table

    def encode_text(self, text: str) -> list[int]:
        """Ids of a prompt.

        Byte and char vocabularies silently drop symbols they do not hold (under enwik8's txl protocol
        that is the newline, which the training data never contains either). A word vocabulary splits on
        whitespace, maps each line end to `<eos>` only where the text has a newline, and maps unknown
        words to `<unk>` when the vocabulary has it (else raises KeyError naming the word).
        """
        if self.kind == "byte":
            table = self.byte_table()
            ids = table[np.frombuffer(text.encode("utf-8"), dtype=np.uint8)]
            return ids[ids >= 0].tolist()
        if self.kind == "char":
            return [self.index[c] for c in text if c in self.index]
        out: list[int] = []
        lines = text.split("\n")
        for i, line in enumerate(lines):
            out.extend(self._word_id(w) for w in line.split())
            if i < len(lines) - 1 and EOS in self.index:
                out.append(self.index[EOS])
        return out

    def unknown(self, text: str) -> list[str]:
        """The symbols of `text` that `encode_text` cannot map to themselves, each once, in order of first
        appearance: words (read as `<unk>`) for a word vocabulary, characters (dropped) otherwise."""
        if self.kind == "word":
            pieces: Iterable[str] = text.split()
        elif self.kind == "char":
            pieces = text
        else:
            pieces = (c for c in text if any(b not in self.index for b in c.encode("utf-8")))
        return list(dict.fromkeys(p for p in pieces if p not in self.index))

    def _word_id(self, word: str) -> int:
        if word in self.index:
            return self.index[word]
        if self.unk_id is None:
            raise KeyError(f"word {word!r} is not in the vocabulary and it has no {UNK}")
        return self.unk_id

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids (a list, numpy array or torch tensor)."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        if self.kind == "byte":
            return bytes(self.symbols[i] for i in ids).decode("utf-8", errors="replace")
        if self.kind == "char":
            return "".join(self.symbols[i] for i in ids)
        # "<eos>" ends a line: words are joined by spaces within a line, with no space around "\n".
        lines, words = [], []
        for i in ids:
            if self.symbols[i] == EOS:
                lines.append(" ".join(words) + "\n")
                words = []
            else:
                words.append(self.symbols[i])
        return "".join(lines) + " ".join(words)

    def to_dict(self) -> dict:
        """JSON-serialisable form; exactly the content of vocab.json."""
        return {"kind": self.kind, "symbols": list(self.symbols)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        """Inverse of `to_dict`."""
        return cls(d["kind"], d["symbols"])

    def digest(self) -> str:
        """sha256 of the canonical JSON of `to_dict()`: the vocabulary's identity in checkpoints."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        return smallest_uint(len(self))


class TextStream:
    """Turns token ids into text piece by piece, so that the pieces joined equal `Vocab.decode` of all
    ids: bytes go through an incremental UTF-8 decoder (a character may span tokens), words are
    joined by spaces within a line and `<eos>` ends the line.

    `after`: the ids already shown (a prompt), so that the first word continues their line with a
    space instead of being glued to the prompt's last word.
    """

    def __init__(self, vocab: Vocab, after: Sequence[int] = ()) -> None:
        self.vocab = vocab
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace") if vocab.kind == "byte" else None
        self._line_start = not after or vocab.symbols[after[-1]] == EOS

    def push(self, token_id: int) -> str:
        """The text that token `token_id` adds (possibly empty: part of a multi-byte character)."""
        symbol = self.vocab.symbols[token_id]
        if self._utf8 is not None:
            return self._utf8.decode(bytes([symbol]))
        if self.vocab.kind == "char":
            return symbol
        if symbol == EOS:
            self._line_start = True
            return "\n"
        piece = symbol if self._line_start else " " + symbol
        self._line_start = False
        return piece

    def finish(self) -> str:
        """What a trailing incomplete character decodes to."""
        return self._utf8.decode(b"", final=True) if self._utf8 is not None else ""


def smallest_uint(n_symbols: int) -> np.dtype:
    """The smallest unsigned numpy dtype that can hold ids 0..n_symbols-1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_symbols - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)
