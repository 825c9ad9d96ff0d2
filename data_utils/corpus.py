"""A prepared corpus on disk: `data/<name>/{train,valid,test}.npy`, `vocab.json`, `meta.json`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fingerprint import PREPARED_FILES, changed, fingerprint
from .vocab import Vocab

SPLITS = ("train", "valid", "test")


class DataError(Exception):
    """A prepared corpus that is missing, unfinished or corrupt; the message says how to re-make it."""

    exit_code = 2


class CorpusNotFoundError(DataError, FileNotFoundError):
    """The prepared corpus folder (or its meta.json, written last) does not exist."""


class Corpus:
    """Memory-mapped token id arrays of the three splits, with their vocabulary and metadata.

    The arrays are opened with `np.load(mmap_mode="r")`, and every DDP rank on a node shares the page
    cache instead of holding its own copy. On opening, each split is checked once (dtype, shape and
    the min/max of its ids), and a malformed `meta.json`/`vocab.json` is named: a `DataError` says to
    re-run getdata.sh rather than training on wrong ids.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = self.path.name
        meta_path = self.path / "meta.json"
        hint = prepare_command(self.name, self.path.parent)
        self.prepare_command = hint  # what prepares this corpus again, for messages
        _require_finished(self.path, hint)
        self.meta: dict = _read_json(meta_path, hint)
        self.vocab = _read_vocab(self.path, hint)
        self._splits = {s: _load_ids(self.path / f"{s}.npy", len(self.vocab), hint) for s in SPLITS}

    @property
    def train(self) -> np.ndarray:
        return self._splits["train"]

    @property
    def valid(self) -> np.ndarray:
        return self._splits["valid"]

    @property
    def test(self) -> np.ndarray:
        return self._splits["test"]

    def split(self, name: str) -> np.ndarray:
        """The memory-mapped token ids of split `name` ("train", "valid" or "test")."""
        if name not in self._splits:
            raise KeyError(f"unknown split {name!r}; valid splits: {', '.join(SPLITS)}")
        return self._splits[name]

    def fingerprint(
        self, trusted: Mapping[str, Any] | None = None, names: Sequence[str] = PREPARED_FILES
    ) -> dict[str, dict[str, Any]]:
        """The digest records of the corpus's files (`data_utils.fingerprint`). A file is only read when
        its stat signature is neither the one meta.json recorded nor the one in `trusted` (a
        checkpoint's records)."""
        return fingerprint(self.path, names, [self.meta.get("files"), trusted])

    def edited(self, current: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """The files of `current` (see `fingerprint`) that differ from what getdata.sh recorded in
        meta.json; none for a meta.json of an older version, which records no digests."""
        recorded = self.meta.get("files")
        return changed(recorded, current) if isinstance(recorded, Mapping) else []

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(a):,}" for s, a in self._splits.items())
        protocol = self.meta.get("protocol")
        return f"Corpus({self.name!r}, protocol={protocol!r}, vocab={len(self.vocab)}, {sizes})"


def get_corpus(data_dir: str | os.PathLike, dataset: str) -> Corpus:
    """The prepared corpus `data_dir/dataset`."""
    return Corpus(Path(data_dir) / dataset)


def load_vocab(path: str | os.PathLike, words: bool = False) -> Vocab:
    """The vocabulary of the prepared corpus in folder `path`, without opening its splits (the trainer
    sizes the model from it before it opens the corpus); the same errors as `Corpus`. `words`: the
    corpus is meant to be word level, so a user's text is prepared with `--protocol words`."""
    path = Path(path)
    hint = prepare_command(path.name, path.parent, words)
    _require_finished(path, hint)
    return _read_vocab(path, hint)


def _require_finished(path: Path, hint: str) -> None:
    """meta.json is written last by prepare, so without it the folder is missing or unfinished."""
    meta_path = path / "meta.json"
    if meta_path.is_file():
        return
    if path.is_dir():
        raise CorpusNotFoundError(f"{path} is not completely prepared ({meta_path} is missing: the "
                                  f"preparation was interrupted or is running): run `{hint}`")
    raise CorpusNotFoundError(f"{path} not found: run `{hint}`")


def _read_vocab(path: Path, hint: str) -> Vocab:
    try:
        return Vocab.from_dict(_read_json(path / "vocab.json", hint))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path / 'vocab.json'} is malformed ({err}): re-run `{hint}`") from err


def _read_json(path: Path, hint: str) -> dict:
    """A JSON object from `path`, or a DataError naming the file and how to re-make it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"{path} is missing: re-run `{hint}`") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is malformed ({err}): re-run `{hint}`") from err
    if not isinstance(value, dict):
        raise DataError(f"{path} is malformed (expected a JSON object): re-run `{hint}`")
    return value


def _load_ids(path: Path, vocab_size: int, hint: str) -> np.ndarray:
    """Memory-map one split and check that it holds valid token ids: a 1-D integer array whose ids are
    all in [0, vocab_size). A float array would otherwise be cast to integers and trained on."""
    try:
        ids = np.load(path, mmap_mode="r")
    except FileNotFoundError as err:
        raise DataError(f"{path} is missing: re-run `{hint}`") from err
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path} is unreadable ({err}): re-run `{hint}`") from err
    if not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "ui":
        what = type(ids).__name__
        if isinstance(ids, np.ndarray):
            what = f"{ids.dtype} array of shape {ids.shape}"
        raise DataError(f"{path} holds a {what}; token ids must be a 1-D integer array: re-run `{hint}`")
    if len(ids) and (ids.dtype.kind == "i" or np.iinfo(ids.dtype).max >= vocab_size):
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise DataError(f"{path} holds token ids in [{lo}, {hi}] but vocab.json has {vocab_size} symbols "
                            f"(ids must be in [0, {vocab_size})): re-run `{hint}`")
    return ids


def prepare_command(name: str, data_dir: Path, words: bool = False) -> str:
    """The getdata.sh command that prepares corpus `name` under `data_dir`: a registry dataset by its
    name (its protocol is the default), anything else as a user's text, `--protocol words` when `words`."""
    from .datasets import REGISTRY

    where = "" if data_dir == Path("data") else f" --data-dir {data_dir}"
    if name in REGISTRY:
        return f"bash getdata.sh {name}{where}"
    protocol = " --protocol words" if words else ""
    return f"bash getdata.sh text --input FILE --name {name}{protocol}{where}"
