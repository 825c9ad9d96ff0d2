"""Evaluation features: eval.py --text, --reset-every, the xl overrides, torchrun equality, and the
text encoder behind --text (data_utils/textfile.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_train_utils import REPO, prepared_data_dir, run_train, subprocess_env

from data_utils.corpus import get_corpus
from data_utils.textfile import encode_file, infer_protocol
from data_utils.vocab import Vocab
from infiniattention import InfiniTransformerLM
from infiniattention.training.evaluate import evaluate, load_for_inference

SAMPLE = REPO / "data" / "samples" / "enwik6"
TEST_BYTES = (950_000, 1_000_000)  # the enwik8-sample test split, before the txl protocol drops newlines


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Tiny infini and xl checkpoints (segment 16) after 6 steps at a high learning rate (their
    attention is no longer uniform, so context settings change the scores visibly)."""
    root = tmp_path_factory.mktemp("evaluate")
    out = {}
    for memory in ("infini", "xl"):
        assert run_train(root / memory, **{"train.max_steps": 6, "model.dropout": 0.0, "optim.lr": 0.01,
                                           "model.memory": memory}) == 0
        out[memory] = root / memory / "ckpt_00000006.pt"
    return out


def run_eval(*args: str) -> tuple[int, dict | None]:
    import eval as eval_cli

    code = eval_cli.main(list(args))
    return code, None


def eval_json(tmp_path, *args: str) -> dict:
    import eval as eval_cli

    out = tmp_path / f"r{len(list(tmp_path.iterdir()))}.json"
    assert eval_cli.main([*args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


# -------------------------------------------------------------------------------------------- --text


def test_text_equal_to_a_split_scores_the_same(ckpts, tmp_path):
    """The raw bytes of the test split, newlines included, go through the txl protocol exactly as the
    prepared split did: the same tokens, the same bpc, nothing unknown."""
    raw = SAMPLE.read_bytes()[slice(*TEST_BYTES)]
    path = tmp_path / "test.txt"
    path.write_bytes(raw)
    common = ["--checkpoint", str(ckpts["infini"]), "--batch-size", "2", "--tgt-len", "40",
              "--max-tokens", "1600"]
    split = eval_json(tmp_path, *common, "--split", "test")
    text = eval_json(tmp_path, *common, "--text", str(path))
    assert text["loss"] == split["loss"] and text["tokens"] == split["tokens"] == 1600
    assert text["unknown"] == 0 and text["dropped_by_protocol"] == raw.count(b"\n") > 0
    assert text["protocol"] == "txl"
    corpus = get_corpus(prepared_data_dir(), "enwik8-sample")
    vocab = Vocab.from_dict(torch.load(ckpts["infini"], weights_only=True)["vocab"])
    np.testing.assert_array_equal(encode_file(raw, vocab, "txl").ids, corpus.split("test"))


def test_unknown_symbols_are_counted_and_skipped(ckpts, tmp_path, capsys):
    vocab = Vocab.from_dict(torch.load(ckpts["infini"], weights_only=True)["vocab"])
    absent = [b for b in range(256) if b not in vocab.index and b != 10]
    assert len(absent) >= 3
    clean = SAMPLE.read_bytes()[:3000]
    rng = np.random.default_rng(0)
    dirty = bytearray(clean)
    spots = sorted(rng.choice(len(clean), size=37, replace=False).tolist(), reverse=True)
    for i, spot in enumerate(spots):
        dirty[spot:spot] = bytes([absent[i % 3]])
    enc = encode_file(bytes(dirty), vocab, "txl")
    assert enc.unknown == 37 and enc.symbols == len(dirty) - dirty.count(b"\n")
    assert enc.unknown_share == pytest.approx(37 / enc.symbols)
    np.testing.assert_array_equal(enc.ids, encode_file(clean, vocab, "txl").ids)
    (tmp_path / "dirty.txt").write_bytes(bytes(dirty))
    (tmp_path / "clean.txt").write_bytes(clean)
    common = ["--checkpoint", str(ckpts["infini"]), "--batch-size", "1"]
    dirty_res = eval_json(tmp_path, *common, "--text", str(tmp_path / "dirty.txt"))
    assert "37 unknown symbol(s) skipped" in capsys.readouterr().out
    clean_res = eval_json(tmp_path, *common, "--text", str(tmp_path / "clean.txt"))
    assert dirty_res["loss"] == clean_res["loss"] and dirty_res["unknown"] == 37


def test_text_from_stdin(ckpts, tmp_path):
    raw = SAMPLE.read_bytes()[:2000]
    (tmp_path / "t.txt").write_bytes(raw)
    want = eval_json(tmp_path, "--checkpoint", str(ckpts["infini"]), "--text", str(tmp_path / "t.txt"))
    proc = subprocess.run(
        [sys.executable, "eval.py", "--checkpoint", str(ckpts["infini"]), "--text", "-", "--out",
         str(tmp_path / "stdin.json")],
        input=raw, cwd=REPO, env=subprocess_env(), capture_output=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads((tmp_path / "stdin.json").read_text())["loss"] == want["loss"]


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\n\n\n", "no symbol left"),
    (bytes([0xFF, 0xFE]) * 10, "none of the 20 symbols"),
])
def test_bad_text_is_a_one_line_error(ckpts, tmp_path, capsys, content, message):
    vocab = Vocab.from_dict(torch.load(ckpts["infini"], weights_only=True)["vocab"])
    assert 0xFF not in vocab.index and 0xFE not in vocab.index
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    code, _ = run_eval("--checkpoint", str(ckpts["infini"]), "--text", str(path))
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def _whole_file_encode(raw: bytes, vocab: Vocab, protocol: str | None) -> tuple[list[int], int, int, int]:
    """The encoder as it was before it streamed (the whole file at once): (ids, symbols, unknown,
    dropped), the reference the chunked one must equal."""
    import io

    if vocab.kind == "word":
        text = raw.decode("utf-8")
        ids, symbols, unknown = [], 0, 0
        eos, unk = vocab.index.get("<eos>"), vocab.unk_id
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
        return ids, symbols, unknown, 0
    data = np.frombuffer(raw, dtype=np.uint8)
    if vocab.kind == "byte" and protocol == "txl":
        data = data[data != 10]
    elif vocab.kind == "char" and protocol == "txl":
        data = np.frombuffer(raw.strip(b" \t\n\r\x0b\x0c"), dtype=np.uint8)
    table = {(s if vocab.kind == "byte" else ord(s)): i for i, s in enumerate(vocab.symbols)}
    ids = [table[b] for b in data.tolist() if b in table]
    return ids, len(data), len(data) - len(ids), len(raw) - len(data)


def _random_text(rng: np.random.Generator, words: list[str]) -> bytes:
    """Words, several kinds of whitespace and line ends (\\r\\n, \\r, unicode ones), blank and
    space-only lines, multi-byte characters, with or without a newline at the end."""
    pieces = []
    for _ in range(rng.integers(0, 60)):
        kind = rng.random()
        if kind < 0.6:
            pieces.append(str(rng.choice(words)))
        else:
            pieces.append(str(rng.choice([" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", " \n ", "\u2028",
                                          "\x85", "\x1c", "\x0b"])))
    return "".join(pieces).encode("utf-8")


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64, 1 << 20])
def test_streamed_encoding_equals_the_whole_file_encoding(chunk_bytes):
    """Any chunk size gives the ids, counts and errors of the encoder that read the whole file, for every
    vocabulary kind and protocol (words and characters cut by a chunk's end included)."""
    rng = np.random.default_rng(chunk_bytes)
    words = ["the", "cat", "sat", "<unk>", "naïve", "日本", "x", "unseen", "ends\u00e9", "a-b"]
    vocabs = [(Vocab("word", ["<eos>", "the", "cat", "<unk>", "naïve", "日本", "a-b"]), None),
              (Vocab("word", ["<eos>", "the", "cat"]), None), (Vocab("word", ["the", "sat"]), None),
              (Vocab("byte", range(256)), "bytes"), (Vocab("byte", sorted(set(b"the cat\xc3"))), "txl"),
              (Vocab("char", [" ", "t", "h", "e", "\t", "\n"]), "txl"),
              (Vocab("char", [" ", "a", "t", "\r"]), "chars")]
    for _ in range(40):
        raw = _random_text(rng, words) or b"x"
        for vocab, protocol in vocabs:
            want_ids, symbols, unknown, dropped = _whole_file_encode(raw, vocab, protocol)
            if not symbols or not want_ids:
                continue  # refused either way (tested below)
            enc = encode_file(io.BytesIO(raw), vocab, protocol, chunk_bytes=chunk_bytes)
            assert enc.ids.tolist() == want_ids, (raw, vocab, protocol)
            assert (enc.symbols, enc.unknown, enc.dropped) == (symbols, unknown, dropped), (raw, vocab)
            assert enc.ids.dtype == vocab.dtype()
    bad = "naïve 日本\n".encode() * 3 + b"\xff" + b" tail\n"
    word = vocabs[0][0]
    with pytest.raises(ValueError, match=rf"not UTF-8 text \(byte {len(bad) - 7}\)"):
        encode_file(io.BytesIO(bad), word, None, chunk_bytes=chunk_bytes)
    cut = "naïve".encode()[:3]  # a character cut at the end of the file
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 2\)"):
        encode_file(io.BytesIO(cut), word, None, chunk_bytes=chunk_bytes)


@pytest.mark.parametrize("kind", ["byte", "word"])
def test_text_is_encoded_in_memory_near_the_size_of_its_ids(kind, tmp_path):
    """A 6 MB file: the encoder's peak allocation is the ids it returns (one byte per byte of a byte-level
    file) plus a constant; the whole-file encoder peaked at ~16x the file."""
    import tracemalloc

    rng = np.random.default_rng(0)
    if kind == "byte":
        vocab, protocol = Vocab("byte", range(256)), "bytes"
        raw = rng.integers(32, 127, size=6_000_000, dtype=np.uint8).tobytes()
    else:
        names = np.array([f"w{i}" for i in range(1000)])
        vocab, protocol = Vocab("word", ["<eos>", "<unk>", *names[:900].tolist()]), None
        lines = names[rng.integers(0, len(names), size=(120_000, 12))].tolist()
        raw = "\n".join(map(" ".join, lines)).encode()
    path = tmp_path / "big.txt"
    path.write_bytes(raw)
    del raw
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            enc = encode_file(f, vocab, protocol, size_hint=path.stat().st_size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = path.stat().st_size
    assert enc.ids.nbytes <= size
    # the ids, plus the temporaries of one 1 MiB chunk: constant, whatever the file's size (the whole-file
    # encoder's 16x would be ~96 MB here)
    assert peak < enc.ids.nbytes + 16 * 2**20, (peak / 2**20, enc.ids.nbytes / 2**20)


def test_text_that_is_a_device_is_refused(ckpts, capsys):
    code, _ = run_eval("--checkpoint", str(ckpts["infini"]), "--text", "/dev/zero")
    err = capsys.readouterr().err
    assert code == 2 and err == "error: --text /dev/zero is a device, not a text file\n"


def test_text_and_split_exclude_each_other(ckpts, tmp_path, capsys):
    (tmp_path / "t.txt").write_bytes(b"some text")
    code, _ = run_eval("--checkpoint", str(ckpts["infini"]), "--text", str(tmp_path / "t.txt"),
                       "--split", "test")
    assert code == 2 and "exclude each other" in capsys.readouterr().err


def test_word_and_char_vocabularies():
    words = Vocab("word", ["<eos>", "the", "cat", "<unk>"])
    enc = encode_file(b"the cat sat\r\nthe <unk>\n", words, None)  # "sat" is <unk>, as getdata.sh reads it
    assert enc.ids.tolist() == [1, 2, 3, 0, 1, 3, 0] and enc.unknown == 1 and enc.symbols == 7
    assert enc.unknown_as == "<unk>"
    no_unk = encode_file(b"the cat sat\n", Vocab("word", ["<eos>", "the", "cat"]), None)
    assert no_unk.ids.tolist() == [1, 2, 0] and no_unk.unknown == 1 and no_unk.unknown_as == "skipped"
    chars = Vocab("char", [" ", "a", "b"])
    enc = encode_file(b"  ab ca \n", chars, "txl")
    assert enc.ids.tolist() == [1, 2, 0, 1] and enc.unknown == 1 and enc.dropped == 4
    assert infer_protocol(Vocab("byte", range(256))) == "bytes"
    assert infer_protocol(Vocab("byte", [32, 97])) == "txl"


# ------------------------------------------------------------------------------------ --reset-every


def small_data(n: int = 700) -> np.ndarray:
    return np.asarray(get_corpus(prepared_data_dir(), "enwik8-sample").split("test")[:n])


def test_reset_every_beyond_the_stream_is_no_reset(ckpts):
    model, _, cfg, _ = load_for_inference(str(ckpts["infini"]))
    data = small_data()
    n_segments = -(-(len(data) // 2 - 1) // cfg.model.segment_len)
    kw = dict(batch_size=2, tgt_len=24, device=torch.device("cpu"))
    plain = evaluate(model, data, **kw)
    for k in (n_segments, n_segments + 5):
        res = evaluate(model, data, reset_every=k, **kw)
        assert res.nll == plain.nll and res.tokens == plain.tokens
        assert res.segment_nll == plain.segment_nll
    assert evaluate(model, data, reset_every=1, **kw).nll != plain.nll


@pytest.mark.parametrize("memory", ["infini", "xl"])
def test_reset_every_one_is_each_segment_alone(ckpts, memory):
    """K = 1: every segment reads an exactly zero memory (infini: A = (1 - sigmoid(b)) A_dot; xl: no
    cache), i.e. each segment scored from a fresh state; K = 3 restarts every third segment."""
    model, _, cfg, _ = load_for_inference(str(ckpts[memory]))
    N = cfg.model.segment_len
    data = small_data(2 * 5 * N + 2)
    lanes = torch.as_tensor(data[: len(data) // 2 * 2].astype(np.int64)).view(2, -1)
    x, y = lanes[:, :-1], lanes[:, 1:]
    for k in (1, 3):
        nll = []
        with torch.no_grad():
            for start in range(0, x.size(1), k * N):  # a fresh state at every reset point
                out = model(x[:, start : start + k * N], targets=y[:, start : start + k * N])
                nll.append(out.nll.double())
        want = torch.cat(nll, dim=1)
        res = evaluate(model, data, batch_size=2, tgt_len=7, device=torch.device("cpu"), reset_every=k)
        assert res.tokens == y.numel()
        assert res.nll == pytest.approx(want.mean().item(), rel=1e-6)
        assert len(res.segment_nll) == k
        for i in range(k):
            cols = [c for c in range(y.size(1)) if (c // N) % k == i]
            assert res.segment_nll[i] == pytest.approx(want[:, cols].mean().item(), rel=1e-6)


def test_reset_every_one_reads_a_zero_memory(ckpts):
    """The layer-level statement of K = 1: every memory the attention layers read is exactly zero."""
    model, _, cfg, _ = load_for_inference(str(ckpts["infini"]))
    seen = []

    def record(module, args):
        seen.append(args[1].memory.M.abs().max().item())

    hooks = [b.attn.register_forward_pre_hook(record) for b in model.blocks]
    evaluate(model, small_data(), batch_size=2, tgt_len=cfg.model.segment_len, device=torch.device("cpu"),
             reset_every=1)
    assert seen and max(seen) == 0.0  # one call per segment: the state each call starts from is read
    seen.clear()
    evaluate(model, small_data(), batch_size=2, tgt_len=cfg.model.segment_len, device=torch.device("cpu"))
    for h in hooks:
        h.remove()
    assert max(seen) > 0  # without resets the memory is read non-zero


def test_reset_every_must_be_positive(ckpts, capsys):
    code, _ = run_eval("--checkpoint", str(ckpts["infini"]), "--reset-every", "0", "--max-tokens", "10")
    assert code == 2 and "--reset-every must be a positive integer" in capsys.readouterr().err


# ------------------------------------------------------------------------------- xl eval overrides


def test_xl_mem_len_0_is_local_attention(ckpts):
    model, _, cfg, ckpt = load_for_inference(str(ckpts["xl"]), overrides={"mem_len": 0})
    assert model.config.mem_len == 0
    local_cfg = type(cfg.model)(**{**vars(cfg.model), "memory": "none", "mem_len": 0})
    local = InfiniTransformerLM(local_cfg)
    local.load_state_dict(ckpt["model"])
    local.eval()
    kw = dict(batch_size=2, tgt_len=20, device=torch.device("cpu"))
    data = small_data()
    assert evaluate(model, data, **kw).nll == pytest.approx(evaluate(local, data, **kw).nll, rel=1e-6)
    full = load_for_inference(str(ckpts["xl"]))[0]
    assert abs(evaluate(full, data, **kw).nll - evaluate(model, data, **kw).nll) > 1e-4


def test_xl_overrides_change_the_scores(ckpts, tmp_path):
    base = ["--checkpoint", str(ckpts["xl"]), "--batch-size", "2", "--max-tokens", "600"]
    plain = eval_json(tmp_path, *base)
    assert (plain["mem_len"], plain["same_length"], plain["clamp_len"]) == (16, False, -1)
    results = {
        "mem": eval_json(tmp_path, *base, "--mem-len", "40"),
        "same": eval_json(tmp_path, *base, "--same-length"),
        "clamp": eval_json(tmp_path, *base, "--clamp-len", "3"),
    }
    assert results["mem"]["mem_len"] == 40 and results["same"]["same_length"] is True
    assert results["clamp"]["clamp_len"] == 3
    for r in results.values():
        assert r["tokens"] == plain["tokens"] and abs(r["loss"] - plain["loss"]) > 1e-5
    again = eval_json(tmp_path, *base, "--mem-len", "16", "--no-same-length", "--clamp-len", "-1")
    assert again["loss"] == plain["loss"]


@pytest.mark.parametrize("flag", [["--mem-len", "8"], ["--same-length"], ["--clamp-len", "4"]])
def test_xl_flags_on_an_infini_checkpoint_are_errors(ckpts, capsys, flag):
    code, _ = run_eval("--checkpoint", str(ckpts["infini"]), *flag)
    err = capsys.readouterr().err
    assert code == 2 and f"{flag[0]} applies to checkpoints with" in err and "memory infini" in err


def test_bad_xl_override_values_are_errors(ckpts, capsys):
    code, _ = run_eval("--checkpoint", str(ckpts["xl"]), "--mem-len", "-3")
    assert code == 2 and "model.mem_len must be an integer >= 0" in capsys.readouterr().err
    code, _ = run_eval("--checkpoint", str(ckpts["xl"]), "--mem-len", "0", "--same-length")
    assert code == 2 and "same_length needs mem_len > 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ torchrun


@pytest.mark.slow
def test_torchrun_gives_exactly_the_single_process_numbers(ckpts, tmp_path):
    args = ["--checkpoint", str(ckpts["infini"]), "--batch-size", "4", "--tgt-len", "24",
            "--max-tokens", "2000", "--reset-every", "3", "--device", "cpu"]
    single = eval_json(tmp_path, *args)
    out = tmp_path / "ddp.json"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "eval.py",
         *args, "--out", str(out)],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(out.read_text())
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["loss"] == single["loss"] and ddp["tokens"] == single["tokens"]
    assert ddp["segment_loss"] == single["segment_loss"]
