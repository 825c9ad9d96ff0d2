"""Any text file as token ids of a trained model's vocabulary, for `eval.py --text`.

The file goes through the same steps as the training data of its protocol (enwik8's `txl` protocol
drops newline bytes; text8's `txl` strips the ends; wikitext appends `<eos>` to every line), then
every symbol is looked up. A word the vocabulary lacks is `<unk>`, exactly as in the prepared splits,
so a file equal to a split scores exactly as that split. Byte and character vocabularies have no
`<unk>` (nor does a word vocabulary prepared without one): a symbol they lack is skipped. Either way
the unknown symbols are counted, and the caller reports how many and what became of them.

The file is read and encoded `CHUNK_BYTES` at a time into one array of the vocabulary's smallest
integer type (as a prepared split on disk), so memory stays near the size of the ids (one byte per
byte of a byte-level file; a 200 MB file used to take 3.2 GB), and a Ctrl-C is seen within
milliseconds. The result is the same, id for id, as encoding the whole file at once.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from .vocab import EOS, UNK, Vocab

_NEWLINE = 10
_WHITESPACE = b" \t\n\r\x0b\x0c"
CHUNK_BYTES = 1 << 20  # read and encoded at a time: small temporaries, and Ctrl-C is seen at once


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


def encode_file(source: bytes | BinaryIO, vocab: Vocab, protocol: str | None, name: str = "the text", *,
                size_hint: int | None = None, chunk_bytes: int = CHUNK_BYTES) -> EncodedText:
    """Encode the bytes of a file (`source`: the bytes, or a binary file to read to its end) chunk by
    chunk; `size_hint`: its size in bytes when known (sizes the ids array up front). ValueError (one
    line) when it is empty or holds no known symbol."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        size_hint, source = len(source), io.BytesIO(source)
    reader = _Chunks(source, chunk_bytes)
    if vocab.kind == "word":
        enc = _encode_words(reader, vocab, name, size_hint)
    else:
        enc = _encode_bytes(reader, vocab, protocol, size_hint)
    if reader.total == 0:
        raise ValueError(f"{name} is empty: nothing to evaluate")
    if enc.symbols == 0:
        raise ValueError(f"{name} has no symbol left after the {protocol} protocol's preprocessing")
    if len(enc.ids) == 0:
        raise ValueError(f"none of the {enc.symbols:,} symbols of {name} is in the checkpoint's "
                         f"{len(vocab)}-symbol {vocab.kind} vocabulary")
    return enc


class _Chunks:
    """The chunks of a binary file, counting the bytes read."""

    def __init__(self, source: BinaryIO, chunk_bytes: int) -> None:
        self.source, self.chunk_bytes, self.total = source, chunk_bytes, 0

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.source.read(self.chunk_bytes):
            self.total += len(chunk)
            yield chunk


class _Ids:
    """Token ids appended chunk by chunk to one array of `dtype` (capacity doubled when it runs out)."""

    def __init__(self, dtype: np.dtype, capacity: int) -> None:
        self.buf = np.empty(max(capacity, 1), dtype=dtype)
        self.n = 0

    def extend(self, ids: np.ndarray) -> None:
        end = self.n + len(ids)
        if end > len(self.buf):
            grown = np.empty(max(end, 2 * len(self.buf)), dtype=self.buf.dtype)
            grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        self.buf[self.n : end] = ids
        self.n = end

    def array(self) -> np.ndarray:
        return self.buf[: self.n]


def _strip_ends(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The bytes of `chunks` without the whitespace at the start and at the end of the whole stream
    (text8's `txl`: `bytes.strip()` of the file), streamed: trailing whitespace of a chunk is held back
    until something follows it."""
    started, pending = False, bytearray()
    for chunk in chunks:
        if not started:
            chunk = chunk.lstrip(_WHITESPACE)
            if not chunk:
                continue
            started = True
        body = chunk.rstrip(_WHITESPACE)
        if body:
            yield bytes(pending) + body
            pending = bytearray(chunk[len(body):])
        else:
            pending += chunk


def _encode_bytes(chunks: _Chunks, vocab: Vocab, protocol: str | None, size_hint: int | None) -> EncodedText:
    table = np.full(256, -1, dtype=np.int32)
    if vocab.kind == "byte":
        table[np.asarray(vocab.symbols, dtype=np.int64)] = np.arange(len(vocab))
    else:  # char: one-character strings of byte values
        for i, s in enumerate(vocab.symbols):
            if len(s) == 1 and ord(s) < 256:
                table[ord(s)] = i
    stream: Iterator[bytes] = iter(chunks)
    if vocab.kind == "char" and protocol == "txl":
        stream = _strip_ends(stream)  # text8 txl: the ends stripped
    out = _Ids(vocab.dtype(), size_hint if size_hint is not None else CHUNK_BYTES)  # a byte is <= 1 id
    symbols = unknown = 0
    for chunk in stream:
        data = np.frombuffer(chunk, dtype=np.uint8)
        if vocab.kind == "byte" and protocol == "txl":
            data = data[data != _NEWLINE]  # enwik8 txl: newlines dropped from every split
        ids = table[data]
        known = ids >= 0
        symbols += len(data)
        unknown += len(data) - int(known.sum())
        out.extend(ids[known])
    return EncodedText(out.array(), symbols=symbols, unknown=unknown, dropped=chunks.total - symbols)


def _encode_words(chunks: _Chunks, vocab: Vocab, name: str, size_hint: int | None) -> EncodedText:
    """Lines as wikitext preparation reads them (universal newlines, `str.split()` words, `<eos>` per
    line, a last line without its newline included), decoded and split as the chunks come: a word cut
    by a chunk's end is carried into the next chunk."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = io.IncrementalNewlineDecoder(decoder, translate=True)
    eos, unk, index = vocab.index.get(EOS), vocab.unk_id, vocab.index
    out = _Ids(vocab.dtype(), (size_hint or CHUNK_BYTES) // 4)
    counts = {"symbols": 0, "unknown": 0}
    carry, line_open = "", False  # a word that may go on; characters seen since the last line end

    def emit(words: list[str], ends_line: bool) -> None:
        ids = []
        for w in words:
            i = index.get(w)
            if i is None:
                counts["unknown"] += 1
                i = unk
            if i is not None:
                ids.append(i)
        counts["symbols"] += len(words) + (ends_line and eos is not None)
        if ends_line and eos is not None:
            ids.append(eos)
        out.extend(np.asarray(ids, dtype=np.int64))

    def feed(text: str) -> None:
        nonlocal carry, line_open
        *whole, last = (carry + text).split("\n")
        for line in whole:
            emit(line.split(), ends_line=True)
        line_open = bool(last) or (line_open and not whole)
        words = last.split()
        carry = words.pop() if words and not last[-1].isspace() else ""
        emit(words, ends_line=False)

    consumed = 0
    for chunk in chunks:
        held = len(decoder.getstate()[0])  # bytes of a character cut by the previous chunk's end
        try:
            feed(lines.decode(chunk))
        except UnicodeDecodeError as err:
            raise ValueError(f"{name} is not UTF-8 text (byte {consumed - held + err.start}): a word "
                             "vocabulary needs text") from None
        consumed += len(chunk)
    try:
        feed(lines.decode(b"", final=True))
    except UnicodeDecodeError as err:
        raise ValueError(f"{name} is not UTF-8 text (byte {consumed - len(err.object) + err.start}): a word "
                         "vocabulary needs text") from None
    if line_open:  # the last line, without a newline at its end
        emit([carry] if carry else [], ends_line=True)
    return EncodedText(out.array(), symbols=counts["symbols"], unknown=counts["unknown"], dropped=0,
                       as_unk=unk is not None)
