"""Query preparation applied by the router to every search query before BM25."""

from __future__ import annotations

import re

# Interrogatives and auxiliaries carry no topic; most are stopwords already, the rest are here.
_QUESTION_WORDS = re.compile(
    r"\b(what|when|where|which|who|whom|whose|why|how|did|does|do|was|were|is|are|has|have|had)\b",
    re.IGNORECASE,
)


def prepare_query(query: str) -> str:
    return re.sub(r"\s+", " ", _QUESTION_WORDS.sub(" ", query)).strip()
