"""Corpus: loading a prepared folder, and the message when it is missing."""

from __future__ import annotations

import numpy as np
import pytest

from data_utils import Corpus, get_corpus
from data_utils.datasets import REGISTRY
from data_utils.prepare import prepare_dataset


def test_missing_folder_says_how_to_prepare(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        Corpus("data/enwik8")
    assert str(err.value) == "data/enwik8 not found: run `bash getdata.sh enwik8`"
    with pytest.raises(FileNotFoundError) as err:
        get_corpus(tmp_path / "elsewhere", "wikitext-103")
    where = tmp_path / "elsewhere"
    assert str(err.value).endswith(f"run `bash getdata.sh wikitext-103 --data-dir {where}`")
    with pytest.raises(FileNotFoundError, match="getdata.sh text --input FILE --name mycorpus"):
        get_corpus("data", "mycorpus")


def test_unfinished_folder_counts_as_missing(tmp_path):
    (tmp_path / "enwik8").mkdir()
    (tmp_path / "enwik8" / "train.npy").write_bytes(b"partial")
    with pytest.raises(FileNotFoundError, match="getdata.sh enwik8"):
        get_corpus(tmp_path, "enwik8")


def test_bundled_sample_corpus(tmp_path):
    assert REGISTRY["enwik8-sample"].local_dir is not None
    prepare_dataset("enwik8-sample", tmp_path, progress=False)
    corpus = get_corpus(tmp_path, "enwik8-sample")
    assert corpus.name == "enwik8-sample" and corpus.meta["protocol"] == "txl"
    assert [len(corpus.split(s)) for s in ("train", "valid", "test")] == [889_779, 49_097, 49_485]
    assert all(isinstance(a, np.memmap) for a in (corpus.train, corpus.valid, corpus.test))
    raw = REGISTRY["enwik8-sample"].local_dir.joinpath("enwik6").read_bytes()
    assert corpus.vocab.decode(corpus.train[:40]) == raw.replace(b"\n", b"")[:40].decode()
    assert corpus.vocab.digest() == corpus.meta["vocab_digest"]
    with pytest.raises(KeyError, match="valid splits"):
        corpus.split("dev")
