"""Passkey retrieval: the instance generator (data_utils/passkey.py) and scripts/passkey.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_utils.passkey import (
    FILLER,
    KEY_SENTENCE,
    PREAMBLE,
    QUESTION,
    PasskeyError,
    PasskeyTokens,
    answer_mask,
    make_instance,
    parse_depth,
    parse_length,
)
from data_utils.vocab import Vocab

BYTE_VOCAB = Vocab("byte", list(range(256)))


def _enwik8_vocab() -> Vocab:
    with open("data/enwik8-sample/vocab.json", encoding="utf-8") as f:
        return Vocab.from_dict(json.load(f))


@pytest.fixture(scope="module")
def tok() -> PasskeyTokens:
    return PasskeyTokens(_enwik8_vocab())


def _text(tok: PasskeyTokens, ids: np.ndarray) -> str:
    return tok.vocab.decode(ids)


@pytest.mark.parametrize("length", [300, 1024, 2048, 4321])
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_one_key_at_the_requested_depth(tok, length, depth):
    inst = make_instance(tok, length, depth, seed=length + int(depth * 100))
    ids = inst.tokens()
    assert ids.shape == (length,) and ids.dtype == np.int64
    text = _text(tok, ids)
    sentence = KEY_SENTENCE.format(key=inst.key)
    assert text.count(sentence) == 1 and text.count("pass key is") == 2  # the key sentence + the question
    assert text.startswith(PREAMBLE) and text.endswith(QUESTION + inst.key)
    # The key's first copy is at key_pos; the realised depth is within one filler sentence of the target.
    assert text[inst.key_pos:inst.key_pos + 5] == inst.key
    assert text.index(sentence) == inst.key_pos - len("The pass key is ")
    assert abs(inst.depth - depth) * inst.filler_len <= len(FILLER) / 2
    # Everything else is filler: remove the key sentence and the rest is the repeated block.
    body = text[len(PREAMBLE):length - len(QUESTION) - 5].replace(sentence, "", 1)
    assert body == (FILLER * (len(body) // len(FILLER) + 1))[:len(body)]


def test_answer_is_scored_only_on_the_key_digits(tok):
    inst = make_instance(tok, 1000, 0.3, seed=5)
    ids = inst.tokens()
    mask = answer_mask(inst)
    y = ids[1:]
    assert mask.sum() == 5 and mask.shape == y.shape
    assert _text(tok, y[mask]) == inst.key
    assert np.array_equal(y[mask], inst.answer_ids())
    # The copies of the key inside the text are not scored.
    assert not mask[inst.key_pos - 1:inst.key_pos + 4].any()


def test_same_seed_same_instance_and_seeds_differ(tok):
    a = make_instance(tok, 2048, 0.5, seed=7)
    b = make_instance(tok, 2048, 0.5, seed=7)
    assert a.key == b.key and np.array_equal(a.tokens(), b.tokens())
    keys = {make_instance(tok, 2048, 0.5, seed=s).key for s in range(20)}
    assert len(keys) >= 19
    digits = np.array([[int(c) for c in make_instance(tok, 300, 0.5, seed=s).key] for s in range(400)])
    assert set(np.unique(digits)) == set(range(10))  # every digit occurs: chance is 1/10 per digit


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000, 5000])
def test_streaming_equals_materialised(tok, chunk):
    inst = make_instance(tok, 4321, 0.6, seed=3)
    streamed = np.concatenate(list(inst.chunks(chunk)))
    assert np.array_equal(streamed, inst.tokens())
    part = np.concatenate(list(inst.chunks(chunk, start=100, stop=4000)))
    assert np.array_equal(part, inst.tokens()[100:4000])


def test_a_million_token_instance_streams_in_chunks(tok):
    inst = make_instance(tok, parse_length("1m"), 0.5, seed=11)
    n, found, tail = 0, None, None
    for chunk in inst.chunks(65536):
        assert chunk.nbytes <= 65536 * 8  # never more than one chunk in memory
        if found is None and n <= inst.key_pos < n + len(chunk):
            found = _text(tok, chunk[inst.key_pos - n:inst.key_pos - n + 5])
        n += len(chunk)
        tail = chunk
    assert n == 2**20 and found == inst.key
    assert _text(tok, tail[-5:]) == inst.key


def test_byte_and_char_vocabularies_agree():
    char = Vocab("char", sorted(set(PREAMBLE + FILLER + KEY_SENTENCE + QUESTION + "0123456789")))
    a = make_instance(PasskeyTokens(char), 777, 0.4, seed=2)
    b = make_instance(PasskeyTokens(BYTE_VOCAB), 777, 0.4, seed=2)
    assert a.tok.vocab.decode(a.tokens()) == b.tok.vocab.decode(b.tokens())


def test_bad_arguments():
    assert parse_length("2k") == 2048 and parse_length("1M") == 2**20 and parse_length("300") == 300
    for bad in ("2g", "k", "1.5k", "-3", "0"):
        with pytest.raises(PasskeyError, match="bad length"):
            parse_length(bad)
    for bad in ("-0.1", "1.5", "nan", "half"):
        with pytest.raises(PasskeyError, match="bad depth"):
            parse_depth(bad)
    with pytest.raises(PasskeyError, match="digits 0-9"):
        PasskeyTokens(Vocab("char", list(" abcdefghijklmnopqrstuvwxyz")))
    with pytest.raises(PasskeyError, match="byte- or character-level"):
        PasskeyTokens(Vocab("word", ["the", "<eos>"]))
    with pytest.raises(PasskeyError, match="too short"):
        make_instance(PasskeyTokens(BYTE_VOCAB), 100, 0.5, seed=0)
