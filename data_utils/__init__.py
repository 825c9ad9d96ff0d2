"""Data pipeline: dataset registry, download and preparation, vocabularies, corpora, stream iterators."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .corpus import Corpus, get_corpus
from .vocab import Vocab

if TYPE_CHECKING:
    from .iterators import LMOrderedIterator

__all__ = ["Corpus", "LMOrderedIterator", "Vocab", "get_corpus"]


def __getattr__(name: str):
    # The iterator needs torch; importing it lazily keeps `getdata.sh` free of the torch import.
    if name == "LMOrderedIterator":
        from .iterators import LMOrderedIterator

        return LMOrderedIterator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
