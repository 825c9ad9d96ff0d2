"""The command-line programs (infiniattention/commands): one vocabulary of flags with help and defaults,
the old flag names as aliases, shipped configs by name, and word-level generation."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
from pathlib import Path

import pytest
import torch

from data_utils.prepare import build_parser as getdata_parser
from data_utils.vocab import Vocab
from infiniattention import InfiniTransformerLM, ModelConfig, generate
from infiniattention.commands import eval as eval_cmd
from infiniattention.commands import generate as generate_cmd
from infiniattention.commands import passkey as passkey_cmd
from infiniattention.commands import train as train_cmd
from infiniattention.commands.shipped import config_path
from infiniattention.training import checkpoint as ckpt_io
from infiniattention.training.config import RunConfig, load_config
from infiniattention.training.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _script_parser(name: str):
    """build_parser of scripts/<name>.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser


PARSERS = {"train": train_cmd.build_parser, "eval": eval_cmd.build_parser,
           "generate": generate_cmd.build_parser, "passkey": passkey_cmd.build_parser,
           "getdata": getdata_parser, "context_curve": _script_parser("context_curve"),
           "plot_gates": _script_parser("plot_gates")}


def _options(parser: argparse.ArgumentParser, name: str):
    """(program, action) for every argument of `parser` and of its sub-commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _options(subparser, f"{name} {sub}")
        elif not isinstance(action, argparse._HelpAction):
            yield name, action


@pytest.mark.parametrize("name", PARSERS)
def test_every_flag_has_help_that_states_its_default(name):
    for prog, action in _options(PARSERS[name](), name):
        flag = f"{prog} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and action.help != argparse.SUPPRESS, f"{flag} has no help"
        trivial = action.default in (None, False, [], argparse.SUPPRESS)
        assert trivial or "default" in action.help, f"{flag}: the help does not state the default"


def test_same_idea_same_flag_name():
    """Tokens per lane per call is --tgt-len everywhere (passkey's --chunk-len stays as an alias); a folder
    is --out-dir, a file --out; --split is a split, not getdata's fractions (--split stays their alias)."""
    parse = passkey_cmd.build_parser().parse_args
    common = ["eval", "--checkpoint", "m.pt"]
    assert parse([*common, "--tgt-len", "256"]).chunk_len == 256
    assert parse([*common, "--chunk-len", "256"]).chunk_len == 256
    assert eval_cmd.build_parser().parse_args(["--checkpoint", "m.pt", "--tgt-len", "256"]).tgt_len == 256
    # --split names a split (eval.py); the fractions of getdata.sh text --input are --fractions now
    for flag in ("--fractions", "--split"):
        assert getdata_parser().parse_args(["text", flag, "0.8,0.1,0.1"]).split == "0.8,0.1,0.1"
    out_dir = passkey_cmd.build_parser().parse_args([*common, "--out-dir", "d"]).out_dir
    assert out_dir == "d" and eval_cmd.build_parser().parse_args(["--checkpoint", "m", "--out", "r.json"]).out


@pytest.mark.parametrize("script", ["compare_memory.sh", "passkey_cpu.sh"])
@pytest.mark.parametrize("flag", ["--out-dir", "--out"])
def test_shell_scripts_take_out_dir_and_the_old_out(script, flag):
    proc = subprocess.run(["bash", str(REPO / "scripts" / script), flag, "somewhere", "--bogus"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: unknown argument --bogus (see --help)"


def test_passkey_train_overwrite_is_a_flag():
    args = passkey_cmd.build_parser().parse_args(["train", "--config", "passkey_cpu", "--overwrite"])
    assert args.overwrite is True


def test_shipped_configs_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for arg in ("tiny", "tiny.yaml", "configs/tiny.yaml"):
        assert load_config(config_path(arg), []).data.dataset == "enwik8-sample"
    own = tmp_path / "tiny.yaml"  # a file of the user's wins over the shipped name
    own.write_text("data:\n  dataset: mine\n")
    assert config_path("tiny.yaml") == "tiny.yaml"
    with pytest.raises(UserError, match="shipped config: .*enwik8_base.*tiny"):
        config_path("tinyy")


def test_resume_command_names_the_program_that_ran():
    argv = ["--config", "tiny", "--overwrite"]
    assert train_cmd.resume_command(argv) == "python train.py --config tiny"
    assert train_cmd.resume_command(argv, "infini-train") == "infini-train --config tiny"


# ------------------------------------------------------------------------------------------------
# Generation with a word vocabulary.


def _word_checkpoint(path: Path, symbols: list[str]) -> InfiniTransformerLM:
    vocab = Vocab("word", symbols)
    torch.manual_seed(0)
    model = InfiniTransformerLM(ModelConfig(vocab_size=len(vocab), n_layer=1, d_model=16, n_head=2, d_head=8,
                                            d_inner=32, segment_len=8, dropout=0.0)).eval()
    ckpt_io.save_atomic({"format_version": ckpt_io.FORMAT_VERSION, "step": 0, "model": model.state_dict(),
                         "config": RunConfig(model=model.config).to_dict(), "vocab": vocab.to_dict(),
                         "vocab_digest": vocab.digest()}, path)
    return model


WORDS = ["<eos>", "the", "history", "of", "Manila", "is", "long", "<unk>"]


def test_word_generation_joins_words_and_names_unknown_prompt_words(tmp_path, capsys):
    model = _word_checkpoint(tmp_path / "w.pt", WORDS)
    code = generate_cmd.main(["--checkpoint", str(tmp_path / "w.pt"), "--prompt", "The history of ",
                              "--max-new-tokens", "12", "--greedy", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0
    vocab = Vocab("word", WORDS)
    ids = vocab.encode_text("The history of ")
    new = generate(model, torch.tensor([ids]), 12, greedy=True)[0].tolist()
    assert out == vocab.decode(ids + new) + "\n"  # words joined by spaces, the prompt's <unk> shown
    assert out.startswith("<unk> history of")
    assert err == "warning: 1 prompt word(s) not in the vocabulary, read as <unk>: 'The'\n"


def test_word_prompt_without_unk_in_the_vocabulary_is_one_line(tmp_path, capsys):
    _word_checkpoint(tmp_path / "w.pt", WORDS[:-1])
    code = generate_cmd.main(["--checkpoint", str(tmp_path / "w.pt"), "--prompt", "The history of Rome",
                              "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: the prompt has 2 word(s)") and "'The', 'Rome'" in err


def test_ctrl_c_advice_fits_the_program(capsys):
    """A training says how to resume; an evaluation, which wrote nothing, says to run it again."""
    from infiniattention.training.cli import INTERRUPTED, RERUN, cli_entry

    def interrupted(argv=None) -> int:
        raise KeyboardInterrupt

    assert cli_entry(interrupted)() == INTERRUPTED
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert cli_entry(on_interrupt=RERUN)(interrupted)() == INTERRUPTED
    err = capsys.readouterr().err
    assert "resume" not in err and "run the same command again" in err



@pytest.mark.parametrize("module", [eval_cmd, generate_cmd], ids=["eval", "generate"])
def test_ctrl_c_in_eval_and_generate_does_not_speak_of_resuming(module, monkeypatch, capsys):
    from infiniattention.training.cli import INTERRUPTED

    def interrupted(prog=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "build_parser", interrupted)
    assert module.main([]) == INTERRUPTED
    err = capsys.readouterr().err
    assert err.startswith("error: interrupted (Ctrl-C)") and "resume" not in err
