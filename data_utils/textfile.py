"""Any text file as token ids of a trained model's vocabulary, for `eval.py --text`.

The file goes through the same steps as the training data of its protocol (enwik8's `txl` protocol
drops newline bytes; text8's `txl` strips the ends; wikitext appends `<eos>` to every line), then
every symbol is looked up. A word the vocabulary lacks is `<unk>`, exactly as in the prepared splits,
so a file equal to a split scores exactly as that split. Byte and character vocabularies have no
`<unk>` (nor does a word vocabulary prepared without one): a symbol they lack is skipped. Either way
the unknown symbols are counted, and the caller reports how many and what became of them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .vocab import EOS, UNK, Vocab

_NEWLINE = 10
_WHITESPACE = b" \t\n\r\x0b\x0c"


@dataclass
class EncodedText:
    """``ids``: the symbols in order; ``symbols``: symbols after the protocol's own preprocessing;
    ``unknown``: those the vocabulary lacks, read as ``<unk>`` when ``as_unk`` (word vocabularies that
    have it), else skipped; ``dropped``: removed by the protocol itself (e.g. txl newlines), as in
    training, so not counted as unknown."""

    ids: np.ndarray
    symbols: int
    unknown: int
    dropped: int
    as_unk: bool = False

    @property
    def unknown_as(self) -> str:
        """What the unknown symbols became: `<unk>`, or "skipped"."""
        return UNK if self.as_unk else "skipped"

    @property
    def unknown_share(self) -> float:
        """Unknown symbols as a fraction of the file's symbols."""
        return self.unknown / self.symbols if self.symbols else 0.0


def infer_protocol(vocab: Vocab) -> str | None:
    """The protocol a vocabulary implies when the corpus's `meta.json` is not at hand: a byte
    vocabulary without the newline byte comes from enwik8's `txl` protocol (the `bytes` protocol keeps
    all 256 values). None when the vocabulary does not tell."""
    if vocab.kind == "byte":
        return "bytes" if _NEWLINE in vocab.index else "txl"
    return None


def encode_file(raw: bytes, vocab: Vocab, protocol: str | None, name: str = "the text") -> EncodedText:
    """Encode the bytes of a file; ValueError (one line) when it is empty or holds no known symbol."""
    if not raw:
        raise ValueError(f"{name} is empty: nothing to evaluate")
    if vocab.kind == "word":
        enc = _encode_words(raw, vocab, name)
    else:
        enc = _encode_bytes(raw, vocab, protocol)
    if enc.symbols == 0:
        raise ValueError(f"{name} has no symbol left after the {protocol} protocol's preprocessing")
    if len(enc.ids) == 0:
        raise ValueError(f"none of the {enc.symbols:,} symbols of {name} is in the checkpoint's "
                         f"{len(vocab)}-symbol {vocab.kind} vocabulary")
    return enc


def _encode_bytes(raw: bytes, vocab: Vocab, protocol: str | None) -> EncodedText:
    data = np.frombuffer(raw, dtype=np.uint8)
    n = len(data)
    if vocab.kind == "byte" and protocol == "txl":
        data = data[data != _NEWLINE]  # enwik8 txl: newlines dropped from every split
    elif vocab.kind == "char" and protocol == "txl":
        data = np.frombuffer(bytes(data).strip(_WHITESPACE), dtype=np.uint8)  # text8 txl: ends stripped
    table = np.full(256, -1, dtype=np.int64)
    if vocab.kind == "byte":
        table[np.asarray(vocab.symbols, dtype=np.int64)] = np.arange(len(vocab))
    else:  # char: one-character strings of byte values
        for i, s in enumerate(vocab.symbols):
            if len(s) == 1 and ord(s) < 256:
                table[ord(s)] = i
    ids = table[data]
    known = ids >= 0
    return EncodedText(ids[known], symbols=len(data), unknown=int((~known).sum()), dropped=n - len(data))


def _encode_words(raw: bytes, vocab: Vocab, name: str) -> EncodedText:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{name} is not UTF-8 text (byte {err.start}): a word vocabulary needs text") \
            from None
    ids: list[int] = []
    symbols = unknown = 0
    eos, unk = vocab.index.get(EOS), vocab.unk_id
    # Lines as wikitext preparation reads them: universal newlines, `str.split()` words, <eos> per line.
    for line in io.StringIO(text, newline=None):
        words = line.split()
        symbols += len(words) + (eos is not None)
        for w in words:
            i = vocab.index.get(w)
            if i is None:
                unknown += 1
                i = unk
            if i is not None:
                ids.append(i)
        if eos is not None:
            ids.append(eos)
    return EncodedText(np.asarray(ids, dtype=np.int64), symbols=symbols, unknown=unknown, dropped=0,
                       as_unk=unk is not None)
