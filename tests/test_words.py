"""The word-level path end to end on a small text made here (`getdata.sh text --protocol words`, a few
training steps with configs/wt2_tiny.yaml shrunk and without its vocab_size, eval.py --split against
--text), and the adaptive cutoffs checked against the corpus's vocabulary rather than a placeholder."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from test_train_utils import REPO

from data_utils.corpus import Corpus
from data_utils.prepare import main as getdata

N_WORDS = 300  # more than 256, the vocab_size a config without a corpus would be checked against
CUTOFFS = [100, 280]  # fit the corpus's 302 symbols (300 words, <eos>, <unk>), not 256


def lines(rng: random.Random, n: int, unknown: int = 0) -> str:
    """`n` lines of words w0..w299 (a word tends to follow its predecessor, so there is something to
    learn), with `unknown` words the training text never holds, each once."""
    out = []
    for _ in range(n):
        w = rng.randrange(N_WORDS)
        words = []
        for _ in range(rng.randrange(3, 12)):
            words.append(f"w{w}")
            w = (w + 1) % N_WORDS if rng.random() < 0.7 else rng.randrange(N_WORDS)
        out.append(words)
    for i in range(unknown):
        out[rng.randrange(n)].insert(1, f"zz{i}")
    return "".join(" ".join(words) + "\n" for words in out)


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    """A word corpus (--min-count 2; valid and test with unseen words) and a 3-step checkpoint on it."""
    import train

    root = tmp_path_factory.mktemp("words")
    rng = random.Random(0)
    every_word_twice = " ".join(f"w{i}" for i in range(N_WORDS)) + "\n"
    texts = {"train": 2 * every_word_twice + lines(rng, 400) + "once\n", "valid": lines(rng, 20, unknown=3),
             "test": lines(rng, 30, unknown=5)}
    for split, text in texts.items():
        (root / f"{split}.txt").write_text(text)
    argv = ["text", "--protocol", "words", "--min-count", "2", "--name", "words",
            "--data-dir", str(root / "data")]
    for split in texts:
        argv += [f"--{split}", str(root / f"{split}.txt")]
    assert getdata(argv) == 0
    sets = {"data.data_dir": str(root / "data"), "data.dataset": "words", "model.cutoffs": CUTOFFS,
            "model.n_layer": 1, "model.d_model": 32, "model.n_head": 2, "model.d_head": 16,
            "model.d_inner": 64, "model.segment_len": 16, "model.dropout": 0.0, "data.batch_size": 2,
            "data.tgt_len": 32,
            "train.max_steps": 3, "train.eval_interval": 0, "train.ckpt_interval": 0, "train.device": "cpu"}
    config = yaml.safe_load((REPO / "configs" / "wt2_tiny.yaml").read_text())
    del config["model"]["vocab_size"]  # no placeholder: the corpus's size is the one the cutoffs must fit
    (root / "wt2_tiny.yaml").write_text(yaml.safe_dump(config))
    args = ["--config", str(root / "wt2_tiny.yaml"), "--run-dir", str(root / "run"), "--no-progress"]
    for key, value in sets.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    assert train.main(args) == 0
    return root, args


def test_corpus_vocabulary_sizes_the_model(word_run):
    from infiniattention.training.checkpoint import load

    root, _ = word_run
    corpus = Corpus(root / "data" / "words")
    assert len(corpus.vocab) == N_WORDS + 2 and corpus.vocab.symbols[-1] == "<unk>"  # "once" is below 2
    meta = json.loads((root / "data" / "words" / "meta.json").read_text())
    assert meta["unk_tokens"] == {"train": 1, "valid": 3, "test": 5}  # "once", then the unseen zz words
    model = load(root / "run" / "ckpt_00000003.pt")["config"]["model"]
    assert model["vocab_size"] == N_WORDS + 2 and model["adaptive"] and model["cutoffs"] == CUTOFFS


def test_cutoffs_that_do_not_fit_the_corpus_are_one_line(word_run, tmp_path, capsys):
    import train

    root, args = word_run
    assert train.main([*args, "--run-dir", str(tmp_path / "run"), "--set", "model.cutoffs=[100, 400]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    corpus = root / "data" / "words"
    assert f"model.cutoffs [100, 400] do not fit {corpus}: its vocabulary has 302 symbols" in err


def test_cutoffs_are_checked_by_the_trainer_too(word_run, tmp_path):
    from infiniattention.training.config import ConfigError, config_from_dict
    from infiniattention.training.trainer import Trainer

    root, _ = word_run
    cfg = config_from_dict({"model": {"adaptive": True, "cutoffs": [100, 400], "vocab_size": 500},
                            "data": {"data_dir": str(root / "data"), "dataset": "words"},
                            "train": {"device": "cpu"}})
    with pytest.raises(ConfigError, match="its vocabulary has 302 symbols"):
        Trainer(cfg, tmp_path / "run")


def test_text_equal_to_a_split_scores_the_same_with_unknown_words(word_run, tmp_path, capsys):
    """--text reads words the vocabulary lacks as <unk>, as the prepared split did: the same tokens and the
    same loss, and the unknown words counted (unseen ones plus the training words below --min-count)."""
    import eval as eval_cli

    root, _ = word_run
    split, unknown = "test", 5  # its 5 unseen words; none of its words is below --min-count in train
    ckpt = str(root / "run" / "ckpt_00000003.pt")
    common = ["--checkpoint", ckpt, "--batch-size", "2", "--tgt-len", "16"]
    results = {}
    for how in (["--split", split], ["--text", str(root / f"{split}.txt")]):
        out = tmp_path / f"{how[0][2:]}.json"
        assert eval_cli.main([*common, *how, "--out", str(out)]) == 0
        results[how[0]] = json.loads(out.read_text())
    by_split, by_text = results["--split"], results["--text"]
    assert by_text["tokens"] == by_split["tokens"] > 0
    assert by_text["loss"] == by_split["loss"] and by_text["ppl"] == by_split["ppl"]
    assert by_text["unknown"] == unknown and by_text["unknown_as"] == "<unk>"
    assert f"{unknown} unknown word(s) read as <unk>" in capsys.readouterr().out


@pytest.mark.parametrize("config, hint", [
    ("wt2_tiny", "`bash getdata.sh text --input FILE --name mytext --protocol words"),
    ("tiny", "`bash getdata.sh text --input FILE --name mytext --data-dir"),
])
def test_a_missing_corpus_gets_the_getdata_command_of_its_level(config, hint, tmp_path, capsys):
    """A word-level config (adaptive softmax) names `--protocol words`; a byte-level one does not; and the
    line comes before any run folder is made."""
    import train

    argv = ["--config", config, "--run-dir", str(tmp_path / "run"), "--set", "data.dataset=mytext",
            "--set", f"data.data_dir={tmp_path / 'data'}"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'data' / 'mytext'} not found: run ") and hint in err, err
    assert (config == "tiny") == ("--protocol" not in err)
    assert not (tmp_path / "run").exists()
    assert train.main([*argv, "--set", "model.n_layer=0"]) == 2  # a mistake in the config is named first
    assert "model.n_layer must be a positive integer" in capsys.readouterr().err


def test_a_word_config_on_a_byte_corpus_says_to_use_a_byte_config(tmp_path, capsys):
    """README's "byte level" walk with wt2_tiny.yaml used to end in "model.cutoffs do not fit"."""
    from test_train_utils import prepared_data_dir

    import train

    argv = ["--config", "wt2_tiny", "--run-dir", str(tmp_path / "run"), "--set", "data.dataset=enwik8-sample",
            "--set", f"data.data_dir={prepared_data_dir()}"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "enwik8-sample is a byte-level corpus (194 symbols) and model.adaptive is for word" in err, err
    assert "--config tiny" in err
