"""BM25 tokenizer: lowercase word tokens, English stopwords, Snowball stemming."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import Stemmer
from bm25s.stopwords import STOPWORDS_EN_PLUS

# Words of two or more characters; apostrophes split ("Melanie's" -> "melanie", "s" dropped).
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
STOPWORDS: frozenset[str] = frozenset(STOPWORDS_EN_PLUS)


@lru_cache(maxsize=1)
def _stemmer() -> Stemmer.Stemmer:
    # PyStemmer (C Snowball) keeps its own word cache, so repeated words are cheap.
    return Stemmer.Stemmer("english")


class Tokenizer:
    """Callable text -> tokens. The same instance must serve documents and queries."""

    def __init__(self, *, stopwords: Iterable[str] | None = STOPWORDS, stem: bool = True) -> None:
        self.stopwords = frozenset(stopwords or ())
        self.stem = stem

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _TOKEN.findall(text.lower()) if w not in self.stopwords]
        if self.stem:
            words = _stemmer().stemWords(words)
        return words


DEFAULT_TOKENIZER = Tokenizer()


def tokenize(text: str) -> list[str]:
    return DEFAULT_TOKENIZER(text)
