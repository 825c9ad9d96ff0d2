"""Data pipeline: dataset registry, download and preparation, vocabularies, corpora, stream iterators."""

from __future__ import annotations

from typing import TYPE_CHECKING

from data_utils.startup import lazy_exports

if TYPE_CHECKING:
    from .corpus import Corpus, get_corpus
    from .iterators import LMOrderedIterator
    from .vocab import Vocab

__all__ = ["Corpus", "LMOrderedIterator", "Vocab", "get_corpus"]

# Imported on first use: a program's first import (data_utils.startup) must not load numpy or torch
# before its guard is in place, and getdata.sh never needs the torch that the iterator imports.
_LAZY = {"Corpus": ".corpus", "get_corpus": ".corpus", "LMOrderedIterator": ".iterators", "Vocab": ".vocab"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
