"""Data pipeline: dataset registry, download and preparation, vocabularies, corpora, stream iterators."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .corpus import Corpus, get_corpus
    from .iterators import LMOrderedIterator
    from .vocab import Vocab

__all__ = ["Corpus", "LMOrderedIterator", "Vocab", "get_corpus"]

# Imported on first use: a program's first import (data_utils.startup) must not load numpy or torch
# before its guard is in place, and getdata.sh never needs the torch that the iterator imports.
_LAZY = {"Corpus": ".corpus", "get_corpus": ".corpus", "LMOrderedIterator": ".iterators", "Vocab": ".vocab"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
