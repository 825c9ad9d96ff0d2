"""Passkey retrieval: the instance generator (data_utils/passkey.py) and scripts/passkey.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from data_utils.passkey import (
    ANSWER,
    FILLER,
    KEY_SENTENCE,
    PREAMBLE,
    QUESTION,
    Haystack,
    PasskeyError,
    PasskeyTokens,
    answer_mask,
    is_ambiguous,
    make_instance,
    parse_depth,
    parse_length,
)
from data_utils.vocab import Vocab

BYTE_VOCAB = Vocab("byte", list(range(256)))


def _enwik8_vocab() -> Vocab:
    from test_train_utils import prepared_data_dir

    with open(f"{prepared_data_dir()}/enwik8-sample/vocab.json", encoding="utf-8") as f:
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


# ------------------------------------------------------------------------------------------------
# Streamed evaluation (scripts/passkey.py eval) and training (scripts/passkey.py train).

import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from infiniattention import InfiniTransformerLM, ModelConfig  # noqa: E402
from infiniattention.training import checkpoint as ckpt_io  # noqa: E402
from infiniattention.training.passkey import answer_loss, retrieve, state_nbytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "passkey.py"


def _tiny_model(tok: PasskeyTokens | Vocab, memory: str = "infini", seg: int = 256,
                seed: int = 0) -> InfiniTransformerLM:
    torch.manual_seed(seed)
    vocab = tok if isinstance(tok, Vocab) else tok.vocab
    cfg = ModelConfig(vocab_size=len(vocab), n_layer=1, d_model=16, n_head=2, d_head=8, d_inner=32,
                      segment_len=seg, memory=memory, update="delta", mem_len=seg, dropout=0.0)
    return InfiniTransformerLM(cfg).eval()


def test_retrieve_matches_one_call_and_decodes_greedily(tok):
    """Streaming in chunks gives the same answer as one call over the whole prompt, and the decoded
    digits are the argmax continuation fed back token by token."""
    model = _tiny_model(tok, seg=64)
    insts = [make_instance(tok, 700, d, seed=s) for s, d in enumerate((0.0, 0.5, 1.0))]
    res = retrieve(model, insts, chunk_len=128, device=torch.device("cpu"))
    with torch.no_grad():
        ids = torch.from_numpy(np.stack([i.tokens()[:i.prompt_len] for i in insts]))
        for _ in range(5):
            nxt = model(ids).logits[:, -1].argmax(-1)
            ids = torch.cat([ids, nxt[:, None]], 1)
    expect = ids[:, -5:].numpy()
    assert np.array_equal(res.digits_correct, expect == np.stack([i.answer_ids() for i in insts]))
    digit_of = {int(t): str(d) for d, t in enumerate(tok.digit_ids)}
    assert res.predicted == ["".join(digit_of.get(int(t), "?") for t in row) for row in expect]
    assert res.tokens == sum(i.prompt_len + 5 for i in insts)


@pytest.mark.parametrize("memory, long", [("infini", 2**20), ("xl", 2**16), ("none", 2**16)])
def test_million_token_instance_streams_with_a_state_of_constant_size(tok, memory, long):
    """A 1M-token instance streams through a 1-layer model; its state holds as many bytes as at 1K.
    (The baselines are checked at 64K: their state is bounded the same way, and XL is slower.)"""
    model = _tiny_model(tok, memory=memory)
    sizes = {}
    for length in (1024, long):
        res = retrieve(model, [make_instance(tok, length, 0.5, seed=1)], chunk_len=2**16,
                       device=torch.device("cpu"))
        assert res.tokens == length and res.digits_correct.shape == (1, 5)  # the prompt + 5 decoded
        sizes[length] = res.max_state_bytes
    assert sizes[1024] == sizes[long] > 0


def test_state_bytes_count_every_tensor(tok):
    model = _tiny_model(tok, seg=64)
    state = model.init_state(3)
    out = model(torch.randint(0, len(tok.vocab), (3, 100)), state=state)
    by_hand = sum(t.numel() * t.element_size() for lay in out.state.layers for t in lay.tensors().values())
    assert state_nbytes(out.state) == by_hand > state_nbytes(state)


def test_answer_loss_scores_only_the_answer_plus_optional_all_tokens():
    g = torch.Generator().manual_seed(0)
    nll = torch.rand(3, 10, generator=g) + 0.1
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, 5:] = True
    mask[2, 7:] = True
    ref = nll[mask].double().mean()
    assert torch.allclose(answer_loss(nll, mask, 0.0).double(), ref)
    assert torch.allclose(answer_loss(nll, mask, 0.3).double(), ref + 0.3 * nll.double().mean())
    assert answer_loss(nll, torch.zeros_like(mask), 0.0).item() == 0.0
    copy = torch.zeros_like(mask)
    copy[1, :3] = True
    assert torch.allclose(answer_loss(nll, mask, 0.3, copy, 2.0).double(),
                          ref + 0.3 * nll.double().mean() + 2.0 * nll[1, :3].double().mean())


def _save_tiny_checkpoint(path: Path, vocab: Vocab, memory: str = "infini") -> None:
    model = _tiny_model(vocab, memory=memory, seg=64)
    from infiniattention.training.config import RunConfig

    cfg = RunConfig(model=model.config)
    ckpt_io.save_atomic({"format_version": ckpt_io.FORMAT_VERSION, "step": 0, "model": model.state_dict(),
                         "config": cfg.to_dict(), "vocab": vocab.to_dict(), "vocab_digest": vocab.digest()},
                        path)


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def test_eval_cli_writes_tables(tmp_path):
    ckpt = tmp_path / "m.pt"
    _save_tiny_checkpoint(ckpt, _enwik8_vocab())
    r = _run("eval", "--checkpoint", str(ckpt), "--lengths", "512,1k", "--depths", "0,1", "--instances", "2",
             "--out-dir", str(tmp_path / "ev"), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev" / "passkey.json").read_text())
    assert [row["length"] for row in res["rows"]] == [512, 1024]
    for row in res["rows"]:
        assert [c["depth"] for c in row["cells"]] == [0.0, 1.0]
        assert row["tokens"] == 4 * row["length"] and row["tokens_per_s"] > 0 and row["peak_rss_mib"] > 0
        for c in row["cells"]:
            hits = [[p == k for p, k in zip(pred, key, strict=True)] for pred, key in
                    zip(c["predicted"], c["keys"], strict=True)]
            assert c["digit_accuracy"] == pytest.approx(np.mean(hits))
            assert c["accuracy"] == pytest.approx(np.mean([all(h) for h in hits]))
    md = (tmp_path / "ev" / "passkey.md").read_text()
    assert "| 1K |" in md and "tokens/s" in md
    assert res["exact_rss"] is True and "the working set (large blocks mmapped" in md


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_eval_stopped_by_a_signal_says_so_in_one_line(tmp_path, monkeypatch, capsys, signum):
    """A real SIGTERM (SIGHUP) to the process while `passkey.py eval` streams: one line, 143 (129),
    nothing written, and the handler before the evaluation back afterwards."""
    from test_train_utils import signalled

    from infiniattention.commands import passkey as passkey_cmd

    ckpt = tmp_path / "m.pt"
    _save_tiny_checkpoint(ckpt, _enwik8_vocab())

    before = signal.getsignal(signum)
    monkeypatch.setattr(passkey_cmd, "evaluate_grid", signalled(signum))
    code = passkey_cmd.main(["eval", "--checkpoint", str(ckpt), "--lengths", "512", "--no-exact-rss",
                             "--out-dir", str(tmp_path / "ev"), "--device", "cpu"])
    assert code == 128 + signum
    assert capsys.readouterr().err == (f"error: stopped by {signum.name} during the evaluation: nothing was "
                                       "left half-written; run the same command again\n")
    assert signal.getsignal(signum) is before and not (tmp_path / "ev" / "passkey.json").exists()
    assert torch.is_grad_enabled()  # the evaluation leaves this process's autograd mode as it found it


def test_eval_no_exact_rss_is_recorded(tmp_path):
    # --no-exact-rss changes how peak RSS is measured (and speeds CPU runs up): the output must say which.
    ckpt = tmp_path / "m.pt"
    _save_tiny_checkpoint(ckpt, _enwik8_vocab())
    record = tmp_path / "results" / "passkey" / "infini" / "seed-1" / "filler-512.json"
    r = _run("eval", "--checkpoint", str(ckpt), "--lengths", "512", "--depths", "1", "--instances", "1",
             "--out-dir", str(tmp_path / "ev"), "--device", "cpu", "--no-exact-rss", "--results", str(record))
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev" / "passkey.json").read_text())
    assert res["exact_rss"] is False and res["rows"][0]["peak_rss_mib"] > 0
    assert "including pages the allocator keeps" in (tmp_path / "ev" / "passkey.md").read_text()
    rec = json.loads(record.read_text())  # --results: the same numbers, with the checkpoint's config
    assert rec["kind"] == "passkey" and rec["result"] == res and rec["config"]["model"]["memory"] == "infini"
    assert rec["provenance"]["command"].split()[:2] == ["scripts/passkey.py", "eval"]
    assert len(rec["provenance"]["commit"]) in (40, len("unknown"))


def test_heatmap_is_optional(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("passkey_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = {"depths": [0.0, 1.0], "memory": "infini",
              "rows": [{"length": 1024, "cells": [{"accuracy": 0.5}, {"accuracy": 1.0}]}]}
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert mod.heatmap(result, tmp_path / "h.png") is False and not (tmp_path / "h.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--lengths", "2g"], "bad length '2g'"),
    (["--depths", "0,1.5"], "bad depth '1.5'"),
    (["--lengths", "100"], "too short"),
])
def test_eval_bad_arguments_give_one_line_errors(tmp_path, args, message):
    ckpt = tmp_path / "m.pt"
    _save_tiny_checkpoint(ckpt, _enwik8_vocab())
    r = _run("eval", "--checkpoint", str(ckpt), "--out-dir", str(tmp_path), *args)
    assert r.returncode == 2 and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_eval_vocabulary_without_digits_is_a_one_line_error(tmp_path):
    ckpt = tmp_path / "m.pt"
    _save_tiny_checkpoint(ckpt, Vocab("char", list(" abcdefghijklmnopqrstuvwxyz")))
    r = _run("eval", "--checkpoint", str(ckpt), "--lengths", "1k", "--depths", "0.5")
    assert r.returncode == 2 and "lacks the digits 0-9" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------------
# A haystack of ordinary text.


def _valid_haystack() -> Haystack:
    from test_train_utils import prepared_data_dir

    return Haystack("enwik8-sample/valid", np.load(f"{prepared_data_dir()}/enwik8-sample/valid.npy"))


@pytest.mark.parametrize("length", [300, 2048, 8192])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_text_haystack_hides_the_same_key_in_a_span_of_the_text(tok, length, depth):
    """Preamble, a contiguous span of the split's text with the key sentence at a word boundary near
    the depth, the question and the answer; the key is the filler instance's key for the same seed."""
    hay = _valid_haystack()
    seed = 31 * length + int(100 * depth)
    inst = make_instance(tok, length, depth, seed=seed, haystack=hay)
    assert inst.key == make_instance(tok, length, depth, seed=seed).key
    ids = inst.tokens()
    assert ids.shape == (length,)
    sentence = tok.key_parts[0].tolist() + inst.answer_ids().tolist() + tok.key_parts[1].tolist() \
        + inst.answer_ids().tolist() + tok.key_parts[2].tolist()
    p0 = len(tok.preamble)
    k0 = p0 + inst.filler_before  # where the key sentence starts
    assert ids[:p0].tolist() == tok.preamble.tolist() and ids[k0:k0 + len(sentence)].tolist() == sentence
    span = np.concatenate([ids[p0:k0], ids[k0 + len(sentence):length - 5 - len(tok.question)]])
    assert span.tolist() == hay.tokens[inst.hay_start:inst.hay_start + inst.filler_len].tolist()
    assert _text(tok, ids).endswith(QUESTION + inst.key)
    if 0 < inst.filler_before < inst.filler_len:  # inside the text: right after a space or a newline
        assert ids[k0 - 1] in tok.space_ids.tolist()
    assert abs(inst.depth - depth) * inst.filler_len <= 64
    assert np.array_equal(np.concatenate(list(inst.chunks(1000))), ids)


def test_text_haystack_wraps_only_when_longer_than_the_text(tok):
    short = Haystack("short", np.arange(1000) % len(tok.vocab))
    assert not short.wraps(1000) and short.wraps(1001)
    inst = make_instance(tok, 3000, 0.5, seed=3, haystack=short)
    p0, k0 = len(tok.preamble), len(tok.preamble) + inst.filler_before
    ids = inst.tokens()
    want = np.arange(inst.hay_start, inst.hay_start + k0 - p0) % 1000 % len(tok.vocab)
    assert inst.hay_start < 1000 and ids[p0:k0].tolist() == want.tolist()
    with pytest.raises(PasskeyError, match="empty"):
        Haystack("empty", np.zeros(0, dtype=np.int64))


def test_training_lanes_draw_text_haystacks_from_the_training_text(tok):
    v = len(tok.vocab)
    text = np.arange(20000) % v  # consecutive ids: a span of it is recognisable anywhere
    task = PasskeyTaskConfig(min_len=1000, haystack_text_frac=0.5, depth_min=0.5, seed=2)
    src = PasskeyBatches(tok, text, task, batch_size=16, tgt_len=1200)
    kinds = []
    for g in range(16):
        ids, role = src.lane(0, g)
        hay = ids[len(tok.preamble):len(tok.preamble) + 200]
        kinds.append(bool(np.all(np.diff(hay) % v == 1)))  # a span of the text, not the filler
        if not kinds[-1]:
            assert _text(tok, hay).startswith(FILLER[:40])
    assert 3 <= sum(kinds) <= 13


def test_eval_cli_text_haystack(tmp_path):
    from test_train_utils import prepared_data_dir

    from infiniattention.training.config import DataConfig, RunConfig

    vocab = _enwik8_vocab()
    model = _tiny_model(vocab, seg=64)
    data = DataConfig(dataset="enwik8-sample", data_dir=prepared_data_dir())
    cfg = RunConfig(model=model.config, data=data)
    ckpt = tmp_path / "m.pt"
    ckpt_io.save_atomic({"format_version": ckpt_io.FORMAT_VERSION, "step": 0, "model": model.state_dict(),
                         "config": cfg.to_dict(), "vocab": vocab.to_dict(), "vocab_digest": vocab.digest()},
                        ckpt)
    r = _run("eval", "--checkpoint", str(ckpt), "--lengths", "1k,64k", "--depths", "0.5", "--instances", "2",
             "--haystack", "text", "--haystack-split", "valid", "--out-dir", str(tmp_path / "ev"),
             "--device", "cpu", "--no-exact-rss")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev" / "passkey.json").read_text())
    assert res["haystack"] == "enwik8-sample/valid" and res["memory_label"] == "infini"
    assert [row["haystack_wraps"] for row in res["rows"]] == [False, True]  # valid: ~49K tokens
    md = (tmp_path / "ev" / "passkey.md").read_text()
    assert "haystack: enwik8-sample/valid" in md and "| 64K (text repeats) |" in md
    n = len(_valid_haystack().tokens)
    assert f"the haystack enwik8-sample/valid has {n:,} tokens, fewer than the instance" in r.stdout


# ------------------------------------------------------------------------------------------------
# Training batches and scripts/passkey.py train.

from data_utils.passkey import PasskeyBatches, PasskeyTaskConfig  # noqa: E402


def test_batches_are_seeded_per_lane_and_step_and_shard_by_rank(tok):
    text = np.random.default_rng(0).integers(0, len(tok.vocab), 5000)
    task = PasskeyTaskConfig(text_frac=0.3, min_len=300, seed=4)
    whole = PasskeyBatches(tok, text, task, batch_size=4, tgt_len=400)
    b0, b1 = next(iter(whole)), next(iter(whole))
    assert b0.x.shape == b0.y.shape == b0.answer.shape == (4, 400) and whole.step == 2
    assert torch.equal(b0.x[:, 1:], b0.y[:, :-1]) and not torch.equal(b0.x, b1.x)
    # Rank 1 of 2 yields exactly lanes 2-3 of the single-process batch.
    rank1 = PasskeyBatches(tok, text, task, batch_size=4, tgt_len=400, rank=1, world_size=2)
    assert torch.equal(next(iter(rank1)).x, b0.x[2:])
    # A resumed source continues with the next batch.
    again = PasskeyBatches(tok, text, task, batch_size=4, tgt_len=400)
    again.load_state_dict({**whole.state_dict(), "step": 1})
    assert torch.equal(next(iter(again)).x, b1.x)
    with pytest.raises(ValueError, match="tgt_len"):
        PasskeyBatches(tok, text, task, batch_size=4, tgt_len=512).load_state_dict(whole.state_dict())


def test_batch_lanes_hold_an_instance_or_text_with_the_answer_marked(tok):
    v = len(tok.vocab)
    text = np.arange(5000) % v  # ordinary text whose spans are easy to recognise: consecutive ids
    task = PasskeyTaskConfig(text_frac=0.5, min_len=260, seed=1)
    src = PasskeyBatches(tok, text, task, batch_size=16, tgt_len=400)
    n_inst = 0
    for g in range(16):
        ids, role = src.lane(3, g)
        mask = role == ANSWER
        if mask.any():
            n_inst += 1
            s = _text(tok, ids)
            assert s.startswith(PREAMBLE) and mask.sum() == 5
            end = int(np.flatnonzero(mask)[-1]) + 2  # instance length: the answer's last target + 1
            assert s[:end].endswith(QUESTION + s[end - 5:end]) and s[end - 5:end].isdigit()
            assert 260 <= end <= 401 and s[:end].count("pass key is") == 2
            assert np.all(np.diff(ids[end:]) % v == 1)  # after a shorter instance: a span of text
            copy = np.flatnonzero(role == 2) + 1  # positions (in ids) of the second copy's digits
            assert len(copy) == 5 and _text(tok, ids[copy]) == s[end - 5:end]
            assert s[copy[0] - len("Remember it. "):copy[0]] == "Remember it. "
        else:
            assert np.all(np.diff(ids) % v == 1)
    assert 3 <= n_inst <= 13


def test_curriculum_moves_the_key_away_from_the_question():
    task = PasskeyTaskConfig(curriculum_steps=100, curriculum_start=0.8, depth_min=0.1)
    assert task.depth_range(0) == (0.8, 1.0)
    assert task.depth_range(50) == pytest.approx((0.45, 1.0))
    assert task.depth_range(100) == task.depth_range(10**6) == (0.1, 1.0)
    with pytest.raises(PasskeyError, match="text_frac"):
        PasskeyTaskConfig(text_frac=1.5)


def _lane_keys(src: PasskeyBatches, step: int) -> list[str]:
    """The keys of the instance lanes of one step (the digits at the answer targets)."""
    keys = []
    for g in range(src.batch_size):
        ids, role = src.lane(step, g)
        if (role == ANSWER).any():
            keys.append(_text(src.tok, ids[np.flatnonzero(role == ANSWER) + 1]))
    return keys


def test_repeat_frac_zero_keeps_the_lanes_of_earlier_versions(tok):
    # The option draws from the lane's generator only when set, so the shipped recipes (and resumes of
    # runs started before it existed) see exactly the lanes they saw before: digest taken before the change.
    import hashlib

    text = np.random.default_rng(0).integers(0, len(tok.vocab), 5000)
    src = PasskeyBatches(tok, text, PasskeyTaskConfig(text_frac=0.3, min_len=300, seed=4), batch_size=8,
                         tgt_len=400)
    h = hashlib.sha256()
    for g in range(8):
        ids, role = src.lane(5, g)
        h.update(ids.tobytes())
        h.update(role.tobytes())
    assert h.hexdigest() == "0657de2c811823d19904e98d4e42b68bcfbe7ad20c9231244fbb052e03fd76c6"


def test_repeat_frac_oversamples_the_keys_a_one_token_copy_confuses(tok):
    assert is_ambiguous("71665") and is_ambiguous("12131") and is_ambiguous("94844")
    assert not is_ambiguous("12345") and not is_ambiguous("12344") and not is_ambiguous("90129")
    text = np.random.default_rng(0).integers(0, len(tok.vocab), 5000)

    def share(frac: float) -> float:
        src = PasskeyBatches(tok, text, PasskeyTaskConfig(min_len=300, seed=2, repeat_frac=frac),
                             batch_size=50, tgt_len=400)
        keys = [k for step in range(8) for k in _lane_keys(src, step)]
        assert len(keys) == 400 and all(len(k) == 5 and k.isdigit() for k in keys)
        return float(np.mean([is_ambiguous(k) for k in keys]))

    assert share(1.0) == 1.0
    assert 0.42 <= share(0.0) <= 0.58  # uniform keys: 1 - 10*9*8*7 / 10^4 = 0.496
    assert 0.66 <= share(0.5) <= 0.84  # 0.5 + 0.5 * 0.496
    with pytest.raises(PasskeyError, match="repeat_frac"):
        PasskeyTaskConfig(repeat_frac=-0.1)
    inst = make_instance(tok, 400, 0.5, seed=3, key="71665")
    assert inst.key == "71665" and _text(tok, inst.tokens()[-5:]) == "71665"
    with pytest.raises(PasskeyError, match="5 digits"):
        make_instance(tok, 400, 0.5, seed=3, key="7166a")


def _train_args(run: Path, *extra: str) -> list[str]:
    from test_train_utils import prepared_data_dir

    sets = {"model.n_layer": 1, "model.d_model": 32, "model.n_head": 2, "model.d_head": 16,
            "model.d_inner": 64, "model.segment_len": 64, "model.dropout": 0.1, "model.mem_len": 64,
            "data.data_dir": prepared_data_dir(), "data.batch_size": 4, "data.tgt_len": 320,
            "train.log_interval": 1, "train.eval_interval": 2, "train.ckpt_interval": 2,
            "train.device": "cpu", "eval.max_tokens": 256, "eval.test_max_tokens": 256,
            "passkey.val_instances": 4, "passkey.text_frac": 0.25, "passkey.all_weight": 0.1,
            "passkey.min_len": 260, "passkey.curriculum_steps": 4, "passkey.state_passing_from": 0,
            "passkey.write_logit_penalty_from": 0}
    args = ["train", "--config", str(ROOT / "configs" / "passkey_cpu.yaml"), "--run-dir", str(run),
            "--no-progress"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def _main(args: list[str]) -> int:
    import importlib.util

    spec = importlib.util.spec_from_file_location("passkey_script_main", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(args)


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def test_end_frac_puts_that_share_of_the_keys_right_before_the_question(tok):
    text = np.random.default_rng(0).integers(0, len(tok.vocab), 5000)
    question, tail = tok.question, tok.key_parts[2]  # tail: the key sentence's last piece

    def share(frac: float) -> float:
        src = PasskeyBatches(tok, text, PasskeyTaskConfig(min_len=800, seed=3, end_frac=frac),
                             batch_size=50, tgt_len=1000)
        at_end = []
        for step in range(6):
            for g in range(50):
                ids, role = src.lane(step, g)
                answer = np.flatnonzero(role == ANSWER) + 1  # token positions of the answer digits
                q0 = answer[0] - len(question)
                assert np.array_equal(ids[q0:answer[0]], question)
                # depth 1: the key sentence ends where the question starts
                at_end.append(np.array_equal(ids[q0 - len(tail):q0], tail))
        return float(np.mean(at_end))

    assert share(1.0) == 1.0
    assert share(0.0) <= 0.05  # uniform depths: the last of ~40 sentence boundaries, 1 % here
    assert 0.42 <= share(0.5) <= 0.62
    with pytest.raises(PasskeyError, match="end_frac"):
        PasskeyTaskConfig(end_frac=1.2)


def test_train_resumes_exactly_and_logs_passkey_validation(tmp_path):
    """6 steps straight == 4 steps, then a resume to 6 (dropout on, curriculum and text lanes)."""
    assert _main(_train_args(tmp_path / "a", "--set", "train.max_steps=6")) == 0
    assert _main(_train_args(tmp_path / "b", "--set", "train.max_steps=4")) == 0
    assert _main(_train_args(tmp_path / "b", "--set", "train.max_steps=6")) == 0
    a, b = _records(tmp_path / "a", "train"), _records(tmp_path / "b", "train")
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and len(a) == 6
    ckpt = ckpt_io.load(tmp_path / "a" / "ckpt_00000006.pt")
    assert ckpt["iterator"]["step"] == 6
    wa = ckpt["model"]
    wb = ckpt_io.load(tmp_path / "b" / "ckpt_00000006.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    val = _records(tmp_path / "a", "passkey")
    assert [r["step"] for r in val] == [2, 4, 6]
    assert all(0 <= r["digit_acc"] <= 1 and r["answer_nll"] > 0 and r["instances"] == 4 for r in val)
    assert (tmp_path / "a" / "best.pt").is_file() and (tmp_path / "a" / "passkey.yaml").is_file()


def test_train_fine_tunes_from_a_checkpoint(tmp_path):
    assert _main(_train_args(tmp_path / "src", "--set", "train.max_steps=2")) == 0
    src = ckpt_io.load(tmp_path / "src" / "ckpt_00000002.pt")["model"]
    # lr must be > 0 (config validation): at 1e-9 Adam moves a weight by at most ~2e-9 in 2 steps,
    # while a fresh initialisation would differ by orders of magnitude more. eta_min may not exceed lr.
    assert _main(_train_args(tmp_path / "ft", "--set", "train.max_steps=2", "--set", "optim.lr=1e-9",
                             "--set", "optim.eta_min=0", "--set", "optim.weight_decay=0", "--init",
                             str(tmp_path / "src" / "ckpt_00000002.pt"))) == 0
    ft = ckpt_io.load(tmp_path / "ft" / "ckpt_00000002.pt")
    assert ft["step"] == 2
    assert all(torch.allclose(src[k], ft["model"][k], rtol=0, atol=1e-7) for k in src)


def test_train_overwrite_starts_afresh_in_a_used_run_folder(tmp_path, capsys):
    """As train.py: a folder of another run is refused naming --overwrite; --overwrite moves it aside."""
    run = tmp_path / "run"
    assert _main(_train_args(run, "--set", "train.max_steps=2")) == 0
    capsys.readouterr()
    other = ("--set", "train.max_steps=2", "--set", "model.n_layer=2")
    assert _main(_train_args(run, *other)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _main(_train_args(run, *other, "--overwrite")) == 0
    assert ckpt_io.load(run / "ckpt_00000002.pt")["config"]["model"]["n_layer"] == 2
    assert list(run.glob("previous*/ckpt_00000002.pt"))


def test_train_config_errors(tmp_path, capsys):
    assert _main(_train_args(tmp_path / "x", "--set", "passkey.text_fraq=0.5")) == 2
    err = capsys.readouterr().err
    assert "passkey.text_frac" in err and len(err.strip().splitlines()) == 1
    assert _main(_train_args(tmp_path / "x", "--set", "passkey.depth_min=2")) == 2
    assert "passkey.depth_min must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["passkey_cpu", "passkey_cpu_2k", "passkey_gpu"])
@pytest.mark.parametrize("memory", ["infini", "xl", "none"])
def test_shipped_passkey_configs_load_with_every_memory(name, memory):
    import importlib.util

    spec = importlib.util.spec_from_file_location("passkey_script_cfg", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg, task = mod.load_passkey_config(str(ROOT / "configs" / f"{name}.yaml"), [f"model.memory={memory}"])
    assert cfg.model.memory == memory and cfg.data.tgt_len + 1 >= (task.min_len or 0)
    assert task.min_len is None or task.min_len >= PasskeyTokens(BYTE_VOCAB).fixed_len


def test_cpu_recipe_stage_two_fits_stage_one_checkpoints():
    """passkey_cpu_2k.yaml fine-tunes passkey_cpu.yaml's best.pt (--init): the architectures must match,
    and stage 2 trains on longer instances (up to 2K tokens) than stage 1."""
    one, two = (yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
                for name in ("passkey_cpu", "passkey_cpu_2k"))
    assert one["model"] == two["model"]
    assert one["data"]["tgt_len"] < two["data"]["tgt_len"] <= 2048


@pytest.mark.parametrize("args, code, message", [
    (["--help"], 0, "stage 1"),
    (["--bogus"], 2, "unknown argument --bogus"),
    (["transformer"], 2, "unknown row 'transformer'"),
    (["infini+gate+bogus"], 2, "unknown row 'infini+gate+bogus'"),
    (["--seeds", "1,x"], 2, "--seeds must be comma-separated integers"),
    (["--eval", "all"], 2, "--eval must be full, short, screen, screen-short, speed or none"),
    (["--stages", "3"], 2, "--stages must be 1 or 2"),
    (["infini+sp+gate"], 2, "recipe words (sp, zg, zg4) come once each, after the memory's options"),
])
def test_cpu_recipe_script_arguments(args, code, message):
    r = subprocess.run(["bash", str(ROOT / "scripts" / "passkey_cpu.sh"), *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == code and message in (r.stdout + r.stderr)


def test_write_penalty_lowers_the_write_gate_and_needs_one(tmp_path, capsys):
    """passkey.write_penalty adds the mean write gate to the loss: 6 steps with a large one leave every
    layer's gate bias below that of the same run without it; without a write gate it is refused."""
    from infiniattention.training.checkpoint import load

    biases = {}
    for penalty in (0.0, 50.0):
        run = tmp_path / f"p{penalty}"
        assert _main(_train_args(run, "--set", "model.write_gate=true", "--set", "train.max_steps=6",
                                 "--set", f"passkey.write_penalty={penalty}", "--set", "optim.lr=0.01",
                                 "--set", "optim.warmup_steps=0")) == 0
        biases[penalty] = load(run / "ckpt_00000006.pt")["model"]["blocks.0.attn.write_gate.bias"]
    # Adam moves a parameter by up to about lr per step while its gradient keeps its sign (0.06 in 6 steps)
    assert (biases[50.0] < -0.03).all() and (biases[50.0] < biases[0.0]).all(), biases
    capsys.readouterr()
    assert _main(_train_args(tmp_path / "no_gate", "--set", "passkey.write_penalty=1")) == 2
    assert "passkey.write_penalty needs model.write_gate: true" in capsys.readouterr().err


def test_a_write_gate_prior_set_in_both_sections_is_refused(tmp_path, capsys):
    assert _main(_train_args(tmp_path / "twice", "--set", "model.write_gate=true",
                             "--set", "passkey.write_logit_penalty=0.05",
                             "--set", "train.write_logit_penalty=0.05")) == 2
    assert "the write-gate prior is set twice" in capsys.readouterr().err
    assert not (tmp_path / "twice" / "config.yaml").exists()


def test_write_logit_penalty_pushes_logits_above_its_floor_only(tmp_path):
    """passkey.write_logit_penalty: a constant push on every write-gate logit above the floor. With the
    floor at -12 it lowers every gate bias; with the floor above every logit it changes nothing."""
    from infiniattention.training.checkpoint import load

    def bias(run: str, *sets: str) -> torch.Tensor:
        args = ["--set", "model.write_gate=true", "--set", "train.max_steps=4", "--set", "optim.lr=0.01",
                "--set", "optim.warmup_steps=0"]
        for s in sets:
            args += ["--set", s]
        assert _main(_train_args(tmp_path / run, *args)) == 0
        return load(tmp_path / run / "ckpt_00000004.pt")["model"]["blocks.0.attn.write_gate.bias"]

    base = bias("none")
    pushed = bias("pushed", "passkey.write_logit_penalty=50")
    above = bias("above", "passkey.write_logit_penalty=50", "passkey.write_logit_floor=1000")
    assert (pushed < base - 0.02).all(), (pushed, base)
    assert torch.equal(above, base)
    assert torch.equal(bias("pushed", "passkey.write_logit_penalty=50"), pushed)  # finished: its result again


def test_state_passing_carries_lanes_by_their_own_draw_and_ages_resume(tok):
    text = np.random.default_rng(0).integers(0, len(tok.vocab), 20000)

    def source(p: float) -> PasskeyBatches:
        return PasskeyBatches(tok, text, PasskeyTaskConfig(min_len=300, seed=5, state_passing=p),
                              batch_size=32, tgt_len=384)

    plain, passing = iter(source(0.0)), iter(source(0.75))
    carries, ages = [], []
    for step in range(8):
        a, b = next(plain), next(passing)
        assert torch.equal(a.x, b.x) and torch.equal(a.answer, b.answer)  # the same instances
        assert not a.carry.any() and not a.age.any()
        if step == 0:
            assert not b.carry.any()  # nothing to carry into the first step
        carries.append(b.carry.numpy())
        ages.append(b.age)
    carries, ages = np.stack(carries), np.stack(ages)
    assert 0.6 < carries[1:].mean() < 0.9
    for t in range(1, 8):  # a carried lane's memory is one lane older; a reset one is empty
        assert np.array_equal(ages[t], np.where(carries[t], ages[t - 1] + 384, 0))
    resumed = source(0.75)
    resumed.load_state_dict({"step": 8, "batch_size": 32, "tgt_len": 384, "seed": 5})
    assert np.array_equal(resumed.ages, ages[-1])
    assert next(iter(resumed)).age.tolist() == next(passing).age.tolist()
    with pytest.raises(PasskeyError, match="state_passing"):
        PasskeyTaskConfig(state_passing=1.5)


def test_state_passing_trains_resumes_exactly_and_reports_the_memory_age(tmp_path):
    """The same lanes with and without state passing differ only once a lane carries its memory; 6
    steps straight == 4 steps, then a resume (the carried memories come from the checkpoint)."""
    sp = ("--set", "passkey.state_passing=0.8")
    assert _main(_train_args(tmp_path / "a", *sp, "--set", "train.max_steps=6")) == 0
    assert _main(_train_args(tmp_path / "b", *sp, "--set", "train.max_steps=4")) == 0
    assert _main(_train_args(tmp_path / "b", *sp, "--set", "train.max_steps=6")) == 0
    assert _main(_train_args(tmp_path / "off", "--set", "train.max_steps=6")) == 0
    a, b, off = (_records(tmp_path / r, "train") for r in ("a", "b", "off"))
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and len(a) == 6
    assert a[0]["loss"] == off[0]["loss"] and a[-1]["loss"] != off[-1]["loss"]
    ca, cb = (ckpt_io.load(tmp_path / r / "ckpt_00000006.pt") for r in ("a", "b"))
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert all(torch.equal(ca["memory"][k], cb["memory"][k]) for k in ca["memory"])
    ages = [r for r in _records(tmp_path / "a", "train_answer") if "age_max" in r]
    assert ages and max(r["age_max"] for r in ages) >= 320  # some question read a memory of an earlier lane
    assert all(r["age_p10"] <= r["age_p50"] <= r["age_p90"] <= r["age_max"] for r in ages)


@pytest.mark.parametrize("sets, message", [
    (["model.memory=none"], "passkey.state_passing carries the compressive memory"),
    (["data.tgt_len=300"], "multiple of model.segment_len"),
])
def test_state_passing_needs_the_compressive_memory_and_whole_segments(tmp_path, capsys, sets, message):
    args = ["--set", "passkey.state_passing=0.5", "--set", "train.max_steps=1"]
    for s in sets:
        args += ["--set", s]
    assert _main(_train_args(tmp_path / "r", *args)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_state_passing_and_the_logit_prior_start_at_their_steps(tok, tmp_path):
    """state_passing_from: no lane carries before it; write_logit_penalty_from: the prior is off (the
    run equals the run without it) before it."""
    from infiniattention.training.checkpoint import load

    text = np.random.default_rng(0).integers(0, len(tok.vocab), 20000)
    task = PasskeyTaskConfig(min_len=300, seed=5, state_passing=0.9, state_passing_from=3)
    src = iter(PasskeyBatches(tok, text, task, batch_size=16, tgt_len=384))
    carry = [next(src).carry.any().item() for _ in range(6)]
    assert carry == [False, False, False, True, True, True]

    def bias(run: str, *sets: str) -> torch.Tensor:
        args = ["--set", "model.write_gate=true", "--set", "train.max_steps=2", "--set", "optim.lr=0.01",
                "--set", "optim.warmup_steps=0"]
        for s in sets:
            args += ["--set", s]
        assert _main(_train_args(tmp_path / run, *args)) == 0
        return load(tmp_path / run / "ckpt_00000002.pt")["model"]["blocks.0.attn.write_gate.bias"]

    assert torch.equal(bias("late", "passkey.write_logit_penalty=50", "passkey.write_logit_penalty_from=2"),
                       bias("none"))
    with pytest.raises(PasskeyError, match="state_passing_from"):
        PasskeyTaskConfig(state_passing_from=-1)


FAKE_PY = '''#!{python}
"""A stand-in for PY: passkey.py and memory_probe.py log their arguments and write what the script
looks for (checkpoints, the --results record); everything else runs in the real interpreter."""
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
if not args or args[0] not in ("scripts/passkey.py", "scripts/memory_probe.py"):
    os.execv({python!r}, [{python!r}, *args])
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({{"argv": args, "via": os.environ.get("INFINI_RESULTS_VIA")}}) + "\\n")
value = dict(zip(args, args[1:]))
if args[1:2] == ["train"]:
    run = Path(value["--run-dir"])
    run.mkdir(parents=True, exist_ok=True)
    for name in ("ckpt_00000001.pt", "ckpt_00000002.pt", "best.pt"):
        (run / name).write_text("")
else:
    Path(value["--results"]).parent.mkdir(parents=True, exist_ok=True)
    Path(value["--results"]).write_text("{{}}")
'''


def _recipe(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """scripts/passkey_cpu.sh with the stand-in PY, in a copy of the tree; (the run, its PY calls)."""
    from test_scripts import _tree_without_venv

    tree = tmp_path / "tree"
    if not tree.exists():
        _tree_without_venv(tree)
        (tmp_path / "py").write_text(FAKE_PY.format(python=sys.executable))
        (tmp_path / "py").chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    env = {**os.environ, "PY": str(tmp_path / "py"), "FAKE_LOG": str(log)}
    cmd = ["bash", "scripts/passkey_cpu.sh", "--out-dir", str(tmp_path / "runs"), "--results-dir",
           str(tmp_path / "res"), *args]
    r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r, [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _results_of(calls: list[dict]) -> list[str]:
    return [c["argv"][c["argv"].index("--results") + 1] for c in calls if "--results" in c["argv"]]


def test_cpu_recipe_writes_one_record_per_evaluation_and_skips_what_is_recorded(tmp_path):
    r, calls = _recipe(tmp_path, "--seeds", "1,2", "infini+gate", "xl")
    res = tmp_path / "res" / "passkey"
    full = ["filler-2k-8k", "filler-32k", "filler-long", "text-valid-2k-8k", "text-valid-32k",
            "text-test-2k-8k", "text-test-32k", "text-train-long", "probe-filler-1m", "probe-text"]
    expected = [str(res / "infini+gate" / f"seed-{s}" / f"{n}.json") for s in (1, 2) for n in full]
    short = ["filler", "text-valid"]
    expected += [str(res / "xl" / f"seed-{s}" / f"{n}.json") for s in (1, 2) for n in short]
    assert sorted(_results_of(calls)) == sorted(expected)
    assert {c["via"] for c in calls} == {"bash scripts/passkey_cpu.sh --out-dir " + str(tmp_path / "runs")
                                        + " --results-dir " + str(tmp_path / "res")
                                        + " --seeds 1,2 infini+gate xl"}
    evals = [c["argv"] for c in calls if c["argv"][1] == "eval" or "memory_probe" in c["argv"][0]]
    assert all(a[a.index("--checkpoint") + 1].endswith("stage2/ckpt_00000002.pt") for a in evals)
    text_test = next(a for a in evals if a[a.index("--results") + 1].endswith("seed-1/text-test-2k-8k.json"))
    assert text_test[text_test.index("--haystack-split") + 1] == "test" and "--instances" in text_test

    r, calls = _recipe(tmp_path, "--seeds", "1,2", "infini+gate", "xl")
    assert calls == [] and "== infini+gate, seed 2: done (every record of --eval full is in" in r.stdout
    (res / "infini+gate" / "seed-2" / "filler-32k.json").unlink()
    shutil.rmtree(tmp_path / "runs")  # a record, not a run folder, says what is done
    r, calls = _recipe(tmp_path, "--seeds", "1,2", "infini+gate", "xl")
    assert _results_of(calls) == [str(res / "infini+gate" / "seed-2" / "filler-32k.json")]
    assert [c["argv"][1] for c in calls] == ["train", "train", "eval"]


def test_cpu_recipe_screen_evaluates_stage_one(tmp_path):
    r, calls = _recipe(tmp_path, "--stages", "1", "--eval", "screen-short", "infini")
    assert [c["argv"][1] for c in calls] == ["train", "eval", "eval"]  # no stage 2, no probe
    assert calls[0]["argv"][calls[0]["argv"].index("--config") + 1] == "configs/passkey_cpu.yaml"
    screen = tmp_path / "res" / "passkey-screen" / "infini" / "seed-1111"
    for c, name in zip(calls[1:], ("filler-1k-2k", "text-valid-1k-2k"), strict=True):
        a = c["argv"]
        assert a[a.index("--checkpoint") + 1].endswith("infini/seed-1111/stage1/ckpt_00000002.pt")
        assert a[a.index("--results") + 1] == str(screen / f"{name}.json")
        assert (a[a.index("--lengths") + 1], a[a.index("--depths") + 1], a[a.index("--instances") + 1]) == \
            ("1k,2k", "0,0.5,1", "10")
    r, calls = _recipe(tmp_path, "--stages", "1", "--eval", "screen", "infini")
    names = [Path(p).name for p in _results_of(calls)]
    assert names == ["filler.json", "text-valid.json", "probe-filler.json"]


def test_cpu_recipe_speed_evaluates_with_and_without_exact_rss(tmp_path):
    """--eval speed: two evaluations of stage 2's last checkpoint at 1K-1M, one key per depth, the first
    with --exact-rss (the working set, given after the default --no-exact-rss: the last one wins)."""
    r, calls = _recipe(tmp_path, "--eval", "speed", "infini+gate+zg4")
    assert [c["argv"][1] for c in calls] == ["train", "train", "eval", "eval"]
    record = tmp_path / "res" / "passkey-speed" / "infini+gate+zg4" / "seed-1111"
    assert _results_of(calls) == [str(record / "exact-rss.json"), str(record / "no-exact-rss.json")]
    exact, fast = (c["argv"] for c in calls[2:])
    assert [a for a in exact if a in ("--exact-rss", "--no-exact-rss")][-1] == "--exact-rss"
    assert [a for a in fast if a in ("--exact-rss", "--no-exact-rss")][-1] == "--no-exact-rss"
    for a in (exact, fast):
        assert a[a.index("--checkpoint") + 1].endswith("stage2/ckpt_00000002.pt")
        assert (a[a.index("--lengths") + 1], a[a.index("--instances") + 1]) == ("1k,8k,128k,1m", "1")
    r, calls = _recipe(tmp_path, "--eval", "speed", "infini+gate+zg4")
    assert calls == [] and "done (every record of --eval speed" in r.stdout
