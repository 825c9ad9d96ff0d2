"""A prepared corpus on disk: `data/<name>/{train,valid,test}.npy`, `vocab.json`, `meta.json`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .vocab import Vocab

SPLITS = ("train", "valid", "test")


class Corpus:
    """Memory-mapped token id arrays of the three splits, with their vocabulary and metadata.

    The arrays are opened with `np.load(mmap_mode="r")`: nothing is read until it is used, and every
    DDP rank on a node shares the page cache instead of holding its own copy.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = self.path.name
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            # meta.json is written last by prepare, so without it the folder is missing or unfinished.
            hint = _prepare_hint(self.name, self.path.parent)
            raise FileNotFoundError(f"{self.path} not found: run `{hint}`")
        self.meta: dict = json.loads(meta_path.read_text(encoding="utf-8"))
        self.vocab = Vocab.from_dict(json.loads((self.path / "vocab.json").read_text(encoding="utf-8")))
        self._splits = {s: np.load(self.path / f"{s}.npy", mmap_mode="r") for s in SPLITS}

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

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(a):,}" for s, a in self._splits.items())
        protocol = self.meta.get("protocol")
        return f"Corpus({self.name!r}, protocol={protocol!r}, vocab={len(self.vocab)}, {sizes})"


def get_corpus(data_dir: str | os.PathLike, dataset: str) -> Corpus:
    """The prepared corpus `data_dir/dataset`."""
    return Corpus(Path(data_dir) / dataset)


def _prepare_hint(name: str, data_dir: Path) -> str:
    from .datasets import REGISTRY

    where = "" if data_dir == Path("data") else f" --data-dir {data_dir}"
    if name in REGISTRY:
        return f"bash getdata.sh {name}{where}"
    return f"bash getdata.sh text --input FILE --name {name}{where}"
