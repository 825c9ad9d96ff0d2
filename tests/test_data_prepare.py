"""prepare: protocols against slow references, verification, safe extraction, idempotency, the CLI.

Archives are built on the fly from real excerpts in tests/fixtures/data and served from a local
mirror folder; the registry entries are replaced by ones that expect these small archives.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import resource
import shutil
import socket
import subprocess
import sys
import zipfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from data_utils import Corpus
from data_utils.datasets import REGISTRY, Archive, Expected, Source
from data_utils.download import ChecksumError, UnsafeArchiveError
from data_utils.prepare import main, prepare_dataset, prepare_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "data"
ENWIK5 = FIXTURES / "enwik5"
ENWIK5_BOUNDS = (90_000, 95_000, 100_000)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection other than to 127.0.0.1 fails the test."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(path: Path, members: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path.read_bytes()


def enwik8_registry(mirror: Path, members: dict[str, bytes] | None = None) -> dict:
    """An 'enwik8' entry for a zip of enwik5 in `mirror`, with split bounds scaled to 100 KB."""
    raw = ENWIK5.read_bytes()
    mirror.mkdir(parents=True, exist_ok=True)
    archive = make_zip(mirror / "enwik8.zip", members if members is not None else {"enwik8": raw})
    spec = replace(
        REGISTRY["enwik8"],
        base_urls=("http://invalid.example/unused",),
        archive=Archive("enwik8.zip", Expected(size=len(archive), sha256=_sha256(archive))),
        sources=(Source("enwik8", Expected(size=len(raw), sha256=_sha256(raw))),),
        split_bounds=ENWIK5_BOUNDS,
    )
    return {"enwik8": spec}


def txl_reference(data: bytes, bounds) -> tuple[list[list[int]], list[int]]:
    """Transformer-XL's enwik8 pipeline, literally: prep_enwik8's text files, line tokenizer, Counter."""
    a, b, c = bounds
    counter: Counter[str] = Counter()
    symbol_splits = []
    for part in (data[:a], data[a:b], data[b:c]):
        text = " ".join(str(x) if x != 10 else "\n" for x in part)
        symbols = [s for line in text.split("\n") for s in line.strip().split()]
        counter.update(symbols)
        symbol_splits.append(symbols)
    idx2sym = [s for s, _ in counter.most_common()]
    sym2idx = {s: i for i, s in enumerate(idx2sym)}
    return [[sym2idx[s] for s in split] for split in symbol_splits], [int(s) for s in idx2sym]


def test_enwik8_txl_matches_transformer_xl(tmp_path):
    registry = enwik8_registry(tmp_path / "mirror")
    out = prepare_dataset("enwik8", tmp_path / "data", mirror=str(tmp_path / "mirror"), registry=registry)
    corpus = Corpus(out)
    raw = ENWIK5.read_bytes()
    ref_splits, ref_symbols = txl_reference(raw, ENWIK5_BOUNDS)
    assert corpus.vocab.kind == "byte"
    assert corpus.vocab.symbols == ref_symbols
    assert len(corpus.vocab) == len(set(raw)) - 1 == 154  # every byte value that occurs, minus "\n"
    for name, ref in zip(("train", "valid", "test"), ref_splits, strict=True):
        assert corpus.split(name).dtype == np.uint8
        np.testing.assert_array_equal(corpus.split(name), ref)
    # Newlines are dropped, not mapped: 757 of them fall in the train part.
    assert len(corpus.train) == 90_000 - raw[:90_000].count(b"\n") == 90_000 - 757
    assert 10 not in corpus.vocab.symbols
    assert corpus.vocab.symbols[:3] == [32, 101, 116]  # space, "e", "t": the most frequent bytes
    assert corpus.vocab.decode(corpus.train[:10]) == raw.replace(b"\n", b"")[:10].decode()
    meta = corpus.meta
    assert meta["protocol"] == "txl" and meta["dataset"] == "enwik8"
    assert meta["tokens"] == {name: len(corpus.split(name)) for name in ("train", "valid", "test")}
    assert meta["vocab_size"] == 154 and meta["vocab_digest"] == corpus.vocab.digest()
    assert meta["sources"]["enwik8"]["sha256"] == _sha256(raw)
    assert json.loads((out / "vocab.json").read_text()) == corpus.vocab.to_dict()
    assert isinstance(corpus.train, np.memmap)


def test_enwik8_bytes_protocol_keeps_every_byte(tmp_path):
    registry = enwik8_registry(tmp_path / "mirror")
    out = prepare_dataset(
        "enwik8", tmp_path / "data", protocol="bytes", mirror=str(tmp_path / "mirror"), registry=registry
    )
    corpus = Corpus(out)
    raw = np.frombuffer(ENWIK5.read_bytes(), dtype=np.uint8)
    assert corpus.vocab.symbols == list(range(256))
    np.testing.assert_array_equal(corpus.train, raw[:90_000])
    np.testing.assert_array_equal(corpus.valid, raw[90_000:95_000])
    np.testing.assert_array_equal(corpus.test, raw[95_000:])
    assert corpus.meta["protocol"] == "bytes" and corpus.meta["tokens"]["train"] == 90_000


def test_second_run_is_a_no_op_and_protocol_change_reprepares(tmp_path, caplog):
    mirror = tmp_path / "mirror"
    registry = enwik8_registry(mirror)
    out = prepare_dataset("enwik8", tmp_path / "data", mirror=str(mirror), registry=registry)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    (mirror / "enwik8.zip").unlink()  # a second run must not even look for the archive
    caplog.set_level(logging.INFO, logger="data_utils")
    prepare_dataset("enwik8", tmp_path / "data", mirror=str(mirror), registry=registry)
    assert "already prepared" in caplog.text
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    # Another protocol reuses the verified raw files: still no archive needed.
    prepare_dataset("enwik8", tmp_path / "data", protocol="bytes", mirror=str(mirror), registry=registry)
    assert Corpus(out).meta["protocol"] == "bytes"


def test_cli_with_registry_override_and_env_mirror(tmp_path, monkeypatch, caplog):
    mirror = tmp_path / "mirror"
    monkeypatch.setitem(REGISTRY, "enwik8", enwik8_registry(mirror)["enwik8"])
    monkeypatch.setenv("INFINIATTENTION_MIRROR", str(mirror))
    caplog.set_level(logging.INFO, logger="data_utils")
    data_dir = str(tmp_path / "data")
    assert main(["enwik8", "--data-dir", data_dir, "--no-progress"]) == 0
    assert Corpus(Path(data_dir) / "enwik8").meta["tokens"]["train"] == 90_000 - 757
    assert main(["enwik8", "--data-dir", data_dir]) == 0
    assert "already prepared" in caplog.text
    assert main(["enwik8", "--data-dir", data_dir, "--protocol", "nope"]) == 2
    assert "valid protocols: txl, bytes" in caplog.text


def test_corrupt_archive_is_rejected_and_leaves_nothing(tmp_path):
    mirror = tmp_path / "mirror"
    registry = enwik8_registry(mirror)
    blob = bytearray((mirror / "enwik8.zip").read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, different content
    (mirror / "enwik8.zip").write_bytes(bytes(blob))
    expected = registry["enwik8"].archive.expected.sha256
    with pytest.raises(ChecksumError) as err:
        prepare_dataset("enwik8", tmp_path / "data", mirror=str(mirror), registry=registry)
    message = str(err.value)
    assert "enwik8.zip" in message and "sha256 mismatch" in message
    assert f"expected {expected}, got {_sha256(bytes(blob))}" in message
    raw_dir = tmp_path / "data" / "enwik8" / "raw"
    assert not any(raw_dir.iterdir())
    assert not (tmp_path / "data" / "enwik8" / "meta.json").exists()


def test_truncated_archive_reports_size(tmp_path):
    mirror = tmp_path / "mirror"
    registry = enwik8_registry(mirror)
    blob = (mirror / "enwik8.zip").read_bytes()
    (mirror / "enwik8.zip").write_bytes(blob[:-10])
    message = rf"size mismatch: expected {len(blob)} bytes, got {len(blob) - 10} bytes"
    with pytest.raises(ChecksumError, match=message):
        prepare_dataset("enwik8", tmp_path / "data", mirror=str(mirror), registry=registry)


def test_wrong_extracted_file_is_rejected(tmp_path):
    mirror = tmp_path / "mirror"
    registry = enwik8_registry(mirror)
    bad_source = Source("enwik8", Expected(size=100_000, sha256="0" * 64))
    registry["enwik8"] = replace(registry["enwik8"], sources=(bad_source,))
    with pytest.raises(ChecksumError, match="enwik8 \\(extracted from enwik8.zip\\): sha256 mismatch"):
        prepare_dataset("enwik8", tmp_path / "data", mirror=str(mirror), registry=registry)
    raw_dir = tmp_path / "data" / "enwik8" / "raw"
    assert sorted(p.name for p in raw_dir.iterdir()) == ["enwik8.zip"]  # the archive itself was fine


def test_path_traversal_member_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    raw = ENWIK5.read_bytes()
    registry = enwik8_registry(mirror, members={"enwik8": raw, "../evil.txt": b"pwned"})
    with pytest.raises(UnsafeArchiveError, match="'../evil.txt'"):
        prepare_dataset("enwik8", tmp_path / "data", mirror=str(mirror), registry=registry)
    assert not (tmp_path / "data" / "enwik8" / "evil.txt").exists()
    assert not (tmp_path / "data" / "enwik8" / "raw" / "enwik8").exists()  # refused whole
    assert not list(tmp_path.rglob("evil.txt"))


def test_text8_txl_strips_split_edges(tmp_path):
    text = (FIXTURES / "text8_excerpt").read_bytes()
    text = b" " + text  # text8 itself starts with a space; the excerpt lacks it
    bounds = (14_753, 15_573, len(text))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = make_zip(mirror / "text8.zip", {"text8": text})
    spec = replace(
        REGISTRY["text8"],
        archive=Archive("text8.zip", Expected(size=len(archive), sha256=_sha256(archive))),
        sources=(Source("text8", Expected(size=len(text), sha256=_sha256(text))),),
        split_bounds=bounds,
    )
    corpus = Corpus(prepare_dataset("text8", tmp_path / "data", mirror=str(mirror), registry={"text8": spec}))
    assert corpus.vocab.kind == "char" and len(corpus.vocab) == 27
    assert corpus.vocab.symbols[0] == " "
    parts = [text[: bounds[0]], text[bounds[0] : bounds[1]], text[bounds[1] :]]
    for name, part in zip(("train", "valid", "test"), parts, strict=True):
        assert corpus.vocab.decode(corpus.split(name)) == part.decode().strip()
    assert corpus.vocab.decode(corpus.train[:9]) == "anarchism"


def wikitext_lines() -> str:
    return gzip.decompress((FIXTURES / "wikitext-2-valid.txt.gz").read_bytes()).decode("utf-8")


def counts(data: bytes) -> Expected:
    """Lines and tokens (words plus one <eos> per line) of a text whose lines all end with "\n"."""
    text = data.decode("utf-8")
    assert text.endswith("\n") and "\r" not in text
    return Expected(lines=text.count("\n"), tokens=len(text.split()) + text.count("\n"))


def wikitext_spec(members: dict[str, bytes], archive: Archive | None = None):
    """A wikitext-2 entry whose train and test files are `members`' (with their counts) and whose valid
    file is the real one, checked against the registry's published counts."""
    real = {src.filename: src for src in REGISTRY["wikitext-2"].sources}
    assert real["wiki.valid.tokens"].expected == Expected(lines=3_760, tokens=217_646)
    sources = tuple(real[name] if name == "wiki.valid.tokens" else Source(real[name].member, counts(data))
                    for name, data in members.items())
    return replace(REGISTRY["wikitext-2"], sources=sources, archive=archive or REGISTRY["wikitext-2"].archive)


def test_wikitext_protocol_on_the_real_valid_split(tmp_path):
    valid = wikitext_lines().encode("utf-8")
    assert _sha256(valid) == "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"
    test = b"".join(valid.splitlines(keepends=True)[:200])
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    # The real zip holds wikitext-2/wiki.*.tokens; the train file here is the valid file again.
    members = {"wiki.train.tokens": valid, "wiki.valid.tokens": valid, "wiki.test.tokens": test}
    archive = make_zip(mirror / "wikitext-2-v1.zip", {f"wikitext-2/{k}": v for k, v in members.items()})
    md5 = hashlib.md5(archive).hexdigest()
    spec = wikitext_spec(members, Archive("wikitext-2-v1.zip", Expected(md5=md5)))
    out = prepare_dataset("wikitext-2", tmp_path / "data", mirror=str(mirror), registry={"wikitext-2": spec})
    corpus = Corpus(out)
    assert corpus.meta["sources"]["wiki.valid.tokens"]["checked"] == ["lines", "tokens"]
    assert corpus.meta["sources"]["wiki.valid.tokens"]["extracted_from"] == "wikitext-2-v1.zip"
    assert len(corpus.valid) == corpus.meta["tokens"]["valid"] == 217_646  # WikiText paper's count
    lines = valid.decode().split("\n")[:-1]
    assert len(lines) == 3_760
    vocab = corpus.vocab
    assert vocab.kind == "word" and vocab.symbols[0] == "<eos>" and "<unk>" in vocab.index
    assert int((np.asarray(corpus.valid) == 0).sum()) == 3_760  # one <eos> per line, empty ones too
    counts = Counter(w for line in lines for w in line.split())
    assert len(vocab) == len(counts) + 1
    freqs = [counts[w] for w in vocab.symbols[1:]]
    assert freqs == sorted(freqs, reverse=True)
    assert corpus.valid.dtype == np.uint16
    # Decoding the first lines gives back their words, one line per <eos>.
    n = sum(len(line.split()) + 1 for line in lines[:4])
    assert vocab.decode(corpus.valid[:n]).split("\n")[:4] == [" ".join(line.split()) for line in lines[:4]]


def test_text_corpus_from_one_file_and_from_three(tmp_path):
    data = ENWIK5.read_bytes()
    out = prepare_text("mine", tmp_path / "data", input_path=ENWIK5)
    corpus = Corpus(out)
    assert corpus.vocab.symbols == list(range(256))
    assert corpus.meta["tokens"] == {"train": 90_000, "valid": 5_000, "test": 5_000}
    assert bytes(corpus.test) == data[95_000:]
    files = []
    for i, chunk in enumerate((data[:70_000], data[70_000:80_000], data[80_000:])):
        files.append(tmp_path / f"part{i}.txt")
        files[-1].write_bytes(chunk)
    argv = ["text", "--train", str(files[0]), "--valid", str(files[1]), "--test", str(files[2])]
    assert main([*argv, "--name", "three", "--data-dir", str(tmp_path / "data")]) == 0
    tokens = Corpus(tmp_path / "data" / "three").meta["tokens"]
    assert tokens == {"train": 70_000, "valid": 10_000, "test": 20_000}
    with pytest.raises(ValueError, match="not both"):
        prepare_text("x", tmp_path / "data", input_path=ENWIK5, train=files[0])


def test_getdata_sh_prepares_the_bundled_sample_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "INFINIATTENTION_MIRROR"}
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")  # no network possible
    cmd = ["bash", str(ROOT / "getdata.sh"), "enwik8-sample", "--data-dir", str(tmp_path / "data")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    corpus = Corpus(tmp_path / "data" / "enwik8-sample")
    assert corpus.meta["tokens"] == {"train": 889_779, "valid": 49_097, "test": 49_485}
    assert len(corpus.vocab) == 194  # the excerpt's 195 distinct bytes minus "\n"
    assert corpus.meta["sources"]["enwik6"]["sha256"].startswith("369b6889")
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "already prepared" in second.stderr


def test_text_that_is_empty_a_device_or_a_folder_is_named_so(tmp_path, caplog):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    for source, words in ((str(empty), "is empty"), ("/dev/zero", "is not a regular file"),
                          (str(tmp_path), "is a folder")):
        caplog.clear()
        assert main(["text", "--input", source, "--name", "t", "--data-dir", str(tmp_path / "data")]) == 2
        assert f"error: {source} {words}" in caplog.text, caplog.text
    assert not (tmp_path / "data" / "t").exists()


def test_a_full_disk_names_the_file_in_train_py_words(tmp_path):
    """A real failed write (RLIMIT_FSIZE: numpy's writer then reports a short write, with no errno) is one
    line that says "no space left" and names the file; nothing half-prepared is left."""
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "data_utils.prepare", "text", "--input", str(ENWIK5), "--name", "t",
           "--data-dir", str(data)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "error: no space left on device while writing " in proc.stderr and "train.npy" in proc.stderr
    assert "free some space and run the same command again" in proc.stderr
    assert not (data / "t").exists() and not list(data.glob(".t.build-*"))


def test_numpy_out_of_space_message_becomes_no_space_left(tmp_path, monkeypatch, caplog):
    """numpy's own words on a full disk ("Not enough free space to write N bytes after offset 128")."""
    def full(file, arr):
        raise OSError("Not enough free space to write 90000 bytes after offset 128")

    monkeypatch.setattr(np, "save", full)
    assert main(["text", "--input", str(ENWIK5), "--name", "t", "--data-dir", str(tmp_path)]) == 1
    assert "error: no space left on device while writing " in caplog.text and "train.npy" in caplog.text
    assert "Not enough free space" not in caplog.text


def test_unknown_dataset_is_a_clear_error(tmp_path, caplog):
    assert main(["enwik9", "--data-dir", str(tmp_path)]) == 2
    assert "unknown dataset(s) enwik9" in caplog.text


# ---------------------------------------------------------------------------------------- word level

WORDS = {  # made here: valid and test hold words that train lacks, and a literal <unk>
    "train": "the cat sat on the mat\n\n the dog sat on the log <unk>\nthe cat ran\n",
    "valid": "the cat sat on a hat\n",
    "test": "a zebra sat on the mat <unk>\r\nthe dog ran",
}


def word_files(tmp_path: Path) -> list[str]:
    paths = []
    for split, text in WORDS.items():
        paths.append(str(tmp_path / f"{split}.txt"))
        Path(paths[-1]).write_bytes(text.encode("utf-8"))
    return paths


def prepare_words_cli(tmp_path: Path, name: str, *extra: str) -> Corpus:
    train, valid, test = word_files(tmp_path)
    argv = ["text", "--train", train, "--valid", valid, "--test", test, "--protocol", "words", "--name", name,
            "--data-dir", str(tmp_path / "data"), *extra]
    assert main(argv) == 0
    return Corpus(tmp_path / "data" / name)


def test_words_from_three_files_map_unseen_words_to_unk(tmp_path):
    corpus = prepare_words_cli(tmp_path, "words")
    vocab = corpus.vocab
    # <eos>, then the training words by count, ties by first occurrence; the literal <unk> is one of them.
    assert vocab.symbols == ["<eos>", "the", "cat", "sat", "on", "mat", "dog", "log", "<unk>", "ran"]
    assert vocab.decode(corpus.train) == \
        "the cat sat on the mat\n\nthe dog sat on the log <unk>\nthe cat ran\n"
    assert vocab.decode(corpus.valid) == "the cat sat on <unk> <unk>\n"
    # "\r\n" ends a line as "\n" does, and the last line gets its <eos> without a newline.
    assert vocab.decode(corpus.test) == "<unk> <unk> sat on the mat <unk>\nthe dog ran\n"
    assert corpus.meta["protocol"] == "words" and corpus.meta["min_count"] == 1
    assert corpus.meta["tokens"] == {"train": 20, "valid": 7, "test": 12}
    assert set(corpus.meta["files"]) == {"train.npy", "valid.npy", "test.npy", "vocab.json"}  # digests
    assert not list((tmp_path / "data").glob(".words.build-*"))


def test_words_min_count_and_a_training_text_without_unk(tmp_path):
    corpus = prepare_words_cli(tmp_path, "rare", "--min-count", "2")
    # Words seen once are <unk>, which ranks with their 5 occurrences (ties: first occurrence wins).
    assert corpus.vocab.symbols == ["<eos>", "the", "<unk>", "cat", "sat", "on"]
    assert corpus.vocab.decode(corpus.train) == \
        "the cat sat on the <unk>\n\nthe <unk> sat on the <unk> <unk>\nthe cat <unk>\n"
    assert corpus.meta["min_count"] == 2
    # A training text without <unk> still gets one, last, for the valid and test words it lacks.
    (tmp_path / "clean.txt").write_text("b a b\n")
    argv = ["text", "--train", str(tmp_path / "clean.txt"), "--valid", str(tmp_path / "valid.txt"),
            "--test", str(tmp_path / "test.txt"), "--protocol", "words", "--name", "clean",
            "--data-dir", str(tmp_path / "d")]
    assert main(argv) == 0
    clean = Corpus(tmp_path / "d" / "clean")
    assert clean.vocab.symbols == ["<eos>", "b", "a", "<unk>"]
    assert clean.vocab.decode(clean.valid) == "<unk> <unk> <unk> <unk> a <unk>\n"


def test_words_from_one_file_are_cut_at_line_ends(tmp_path, caplog):
    lines = [" ".join(f"w{(i * 7 + j) % 23}" for j in range(i % 5 + 1)) + "\n" for i in range(40)]
    (tmp_path / "all.txt").write_text("".join(lines))
    data = str(tmp_path / "data")
    argv = ["text", "--input", str(tmp_path / "all.txt"), "--protocol", "words", "--name", "one",
            "--data-dir", data]
    assert main([*argv, "--fractions", "0.5,0.25,0.25"]) == 0
    corpus = Corpus(Path(data) / "one")
    tokens = [len(line.split()) + 1 for line in lines]
    total = sum(tokens)
    n_train = int(np.searchsorted(np.cumsum(tokens), 0.5 * total)) + 1  # lines up to the one crossing half
    assert corpus.meta["tokens"]["train"] == sum(tokens[:n_train])
    text = "".join(corpus.vocab.decode(corpus.split(s)) for s in ("train", "valid", "test"))
    assert text == "".join(lines)  # nothing lost, no line cut
    assert corpus.meta["fractions"] == [0.5, 0.25, 0.25]
    # --split is the old name of --fractions; new fractions prepare again
    assert main([*argv, "--split", "0.8,0.1,0.1"]) == 0
    assert Corpus(Path(data) / "one").meta["fractions"] == [0.8, 0.1, 0.1]
    (tmp_path / "short.txt").write_text("one line only\n")
    assert main(["text", "--input", str(tmp_path / "short.txt"), "--protocol", "words", "--name", "x",
                 "--data-dir", data]) == 2
    assert "too few to cut" in caplog.text


def test_word_level_mistakes_are_one_line(tmp_path, caplog):
    train, valid, test = word_files(tmp_path)
    base = ["text", "--train", train, "--valid", valid, "--test", test, "--name", "x",
            "--data-dir", str(tmp_path)]
    assert main([*base, "--min-count", "2"]) == 2  # the byte protocol has no words to count
    assert "--min-count applies to --protocol words only" in caplog.text
    assert main([*base, "--protocol", "words", "--min-count", "0"]) == 2
    assert "--min-count must be a positive integer" in caplog.text
    assert main(["enwik8-sample", "--min-count", "2", "--data-dir", str(tmp_path)]) == 2
    Path(test).write_bytes(b"caf\xe9\n")  # latin-1, not UTF-8
    assert main([*base, "--protocol", "words"]) == 2
    assert f"{test} is not UTF-8 text" in caplog.text
    assert not (tmp_path / "x").exists()


def test_bundled_wikitext_2_sample_is_prepared_offline(tmp_path):
    sample = ROOT / "data" / "samples" / "wiki.valid.tokens"
    assert sample.read_text(encoding="utf-8") == wikitext_lines()  # the real WikiText-2 validation file
    out = prepare_dataset("wikitext-2-sample", tmp_path / "data")
    corpus = Corpus(out)
    assert corpus.meta["tokens"] == {"train": 193_349, "valid": 13_453, "test": 10_844}  # 217,646 in all
    assert len(corpus.vocab) == 12_882 and corpus.vocab.kind == "word"
    assert corpus.meta["sources"]["wiki.valid.tokens"]["checked"] == ["size", "sha256", "lines", "tokens"]
    unk = corpus.vocab.index["<unk>"]
    assert int((np.asarray(corpus.test) == unk).sum()) > int(np.char.count(  # unseen words became <unk>
        np.asarray(sample.read_text().splitlines()[3582:]), "<unk>").sum())


def test_extracted_wikitext_files_are_checked_against_published_counts(tmp_path, monkeypatch, caplog):
    """`--mirror DIR` holding the extracted files (no archive): copied in only when each matches its
    published line and token counts; a file that does not is refused, and so is one put in raw/ by hand."""
    caplog.set_level(logging.INFO, logger="data_utils")
    valid = wikitext_lines().encode("utf-8")
    lines = valid.splitlines(keepends=True)
    members = {"wiki.train.tokens": b"".join(lines[:300]), "wiki.valid.tokens": valid,
               "wiki.test.tokens": b"".join(lines[300:500])}
    monkeypatch.setitem(REGISTRY, "wikitext-2", wikitext_spec(members))
    unzipped = tmp_path / "unzipped"
    (unzipped / "wikitext-2").mkdir(parents=True)  # as unzip leaves wikitext-2-v1.zip
    for name, data in members.items():
        (unzipped / "wikitext-2" / name).write_bytes(data)
    data_dir = tmp_path / "data"
    assert main(["wikitext-2", "--mirror", str(unzipped), "--data-dir", str(data_dir), "--no-progress"]) == 0
    corpus = Corpus(data_dir / "wikitext-2")
    assert corpus.meta["tokens"]["valid"] == 217_646
    for record in corpus.meta["sources"].values():
        assert record["checked"] == ["lines", "tokens"] and "extracted_from" not in record
    assert "wiki.valid.tokens matches the published lines, tokens" in caplog.text

    altered = members["wiki.test.tokens"].replace(b" , ", b" ")  # commas dropped: fewer tokens
    (unzipped / "wikitext-2" / "wiki.test.tokens").write_bytes(altered)
    other = tmp_path / "other"
    assert main(["wikitext-2", "--mirror", str(unzipped), "--data-dir", str(other), "--no-progress"]) == 1
    assert "wiki.test.tokens" in caplog.text and "tokens mismatch: expected" in caplog.text
    assert not (other / "wikitext-2" / "meta.json").exists()
    assert not (other / "wikitext-2" / "raw" / "wiki.test.tokens").exists()  # never under its final name
    # Copied into raw/ by hand (the old route): checked the same way, never prepared as wikitext-2.
    shutil.copy(unzipped / "wikitext-2" / "wiki.test.tokens", other / "wikitext-2" / "raw")
    assert main(["wikitext-2", "--data-dir", str(other), "--no-progress"]) == 1
    assert "delete it, or put the published file there" in caplog.text
    assert not (other / "wikitext-2" / "meta.json").exists()
