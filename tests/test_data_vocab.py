"""Vocab: encode/decode for byte, char and word vocabularies; serialisation and identity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_utils import Vocab
from data_utils.vocab import TextStream, smallest_uint


def test_byte_vocab_roundtrip_and_dropped_symbols():
    v = Vocab("byte", [32, 101, 116, 104, 0xC3, 0xA9])  # no newline, as enwik8's txl protocol
    ids = v.encode_text("the\nthé")
    assert ids == [2, 3, 1, 2, 3, 4, 5]
    assert v.decode(ids) == "thethé"  # the newline is not in the vocabulary: dropped
    assert v.decode(torch.tensor(ids)) == v.decode(np.array(ids)) == "thethé"
    assert v.decode([4]) == "\ufffd"  # half a character decodes with errors="replace"


def test_full_byte_vocab_is_identity():
    v = Vocab("byte", range(256))
    text = "Ünïcode\n<page>"
    assert bytes(v.encode_text(text)) == text.encode("utf-8")
    assert v.decode(v.encode_text(text)) == text


def test_char_vocab():
    v = Vocab("char", [" ", "e", "a"])
    assert v.encode_text("a Eae!") == [2, 0, 2, 1]
    assert v.decode([2, 0, 1]) == "a e"


def test_word_vocab_eos_and_unk():
    v = Vocab("word", ["<eos>", "the", "<unk>", "cat"])
    assert v.encode_text("the cat\nthe dog") == [1, 3, 0, 1, 2]
    assert v.decode([1, 3, 0, 1, 2, 0]) == "the cat\nthe <unk>\n"
    with pytest.raises(KeyError, match="dog"):
        Vocab("word", ["<eos>", "the"]).encode_text("dog")


def test_unknown_names_what_encode_text_cannot_keep():
    assert Vocab("word", ["<eos>", "the", "<unk>"]).unknown("the dog and the dog\n") == ["dog", "and"]
    assert Vocab("char", [" ", "a"]).unknown("a b\nab") == ["b", "\n"]
    assert Vocab("byte", list(range(32, 127))).unknown("café\n") == ["é", "\n"]
    assert Vocab("byte", range(256)).unknown("café\n") == []


def test_text_stream_continues_a_prompt_with_a_space():
    """Word-level text after a prompt: the first word is not glued to the prompt's last one."""
    v = Vocab("word", ["<eos>", "the", "history", "of", "Manila"])
    stream = TextStream(v, after=[1, 2, 3])
    assert v.decode([1, 2, 3]) + "".join(stream.push(i) for i in [4, 0, 1]) == v.decode([1, 2, 3, 4, 0, 1])
    assert TextStream(v, after=[1, 0]).push(4) == "Manila"  # after a line end: no space
    assert TextStream(v).push(4) == "Manila"


def test_dict_roundtrip_and_digest():
    v = Vocab("word", ["<eos>", "é", "b"])
    d = v.to_dict()
    assert json.loads(json.dumps(d)) == d
    w = Vocab.from_dict(d)
    assert w.symbols == v.symbols and w.kind == v.kind and w.digest() == v.digest()
    assert len(v.digest()) == 64
    assert Vocab("word", ["<eos>", "b", "é"]).digest() != v.digest()  # order is identity


def test_invalid_vocabularies():
    with pytest.raises(ValueError, match="unique"):
        Vocab("char", ["a", "a"])
    with pytest.raises(ValueError, match="kind"):
        Vocab("bpe", ["a"])
    with pytest.raises(ValueError, match="256"):
        Vocab("byte", [256])


def test_smallest_uint():
    assert smallest_uint(204) == np.uint8 and smallest_uint(256) == np.uint8
    assert smallest_uint(257) == np.uint16 and smallest_uint(267_735) == np.uint32
