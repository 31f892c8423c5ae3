"""Time understanding for search, without an LLM: which queries ask about time, which memories
state a time, and which dates a query names.

The words come from dateparser's English locale data (relative phrases such as "last week",
"yesterday", "3 days ago", month and weekday names, time units), so the vocabulary is the one a
maintained date library uses; explicit dates in a query are parsed by python-dateutil. Both
checks are dictionary look-ups over the query's or the memory's words (microseconds); the date
parser runs only on queries that contain a year.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from dateutil import parser as date_parser

_WORD = re.compile(r"[a-z]+|\d+")
_YEAR = re.compile(r"\b(19|20)\d\d\b")

# Interrogatives and connectives that make a question about time even when it names no date
# ("When did ...", "How long has ...", "... before the wedding?").
_QUESTION_WORDS = frozenset({"when", "ago", "before", "after", "since", "until", "during"})
_QUESTION_PHRASES = (
    "how long",
    "how many years",
    "how many months",
    "how many weeks",
    "how many days",
    "what year",
    "which year",
    "what month",
    "which month",
    "what date",
    "what day",
    "what time",
    "first time",
)
# Words of everyday speech that place an event in time but that the locale does not list.
_SPEECH_WORDS = frozenset({"weekend", "recently", "lately", "tonight", "ago", "soon", "since"})
_MONTH_NUMBER = {
    name: i
    for i, name in enumerate(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ),
        start=1,
    )
}


@dataclass(frozen=True)
class TimeVocabulary:
    """Time words from dateparser's English locale: single words and multi-word phrases."""

    words: frozenset[str]
    phrases: tuple[str, ...]


@lru_cache(maxsize=1)
def vocabulary() -> TimeVocabulary:
    from dateparser.languages.loader import default_loader

    info = default_loader.get_locale("en").info
    months = tuple(_MONTH_NUMBER)
    weekdays = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    units = ("year", "month", "week", "day", "decade", "fortnight")
    words: set[str] = set(_SPEECH_WORDS)
    # Full names only: abbreviations ("mar", "sat", "mo") are ordinary words too often.
    words.update(
        n.lower() for key in (*months, *weekdays) for n in info[key] if len(n) > 3 or n == key
    )
    words.discard("may")  # the modal verb; "May" with a day or year is caught by the parser
    for unit in units:
        for name in info[unit]:
            if len(name) > 2 and " " not in name:
                words.update((name, name if name.endswith("s") else name + "s"))
    phrases: set[str] = set()
    for names in info["relative-type"].values():
        for name in names:
            (phrases if " " in name else words).add(name)
    return TimeVocabulary(frozenset(words), tuple(sorted(phrases)))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def mentions_time(text: str) -> bool:
    """Whether a memory states when something happened or how long it lasted ("yesterday",
    "last week", "for 4 years", "in July", "2022")."""
    vocab = vocabulary()
    words = _words(text)
    if any(w in vocab.words for w in words) or _YEAR.search(text):
        return True
    lowered = " ".join(words)
    return any(p in lowered for p in vocab.phrases)


def asks_time(query: str) -> bool:
    """Whether a question asks when, how long ago or in what order something happened."""
    words = _words(query)
    if any(w in _QUESTION_WORDS for w in words):
        return True
    lowered = " ".join(words)
    return any(p in lowered for p in _QUESTION_PHRASES) or mentions_time(query)


@dataclass(frozen=True)
class DateSpan:
    """A period a query names: [start, end), UTC."""

    start: datetime
    end: datetime

    def distance_days(self, ts: datetime) -> float:
        """0 inside the span, else days to its nearest edge."""
        if ts < self.start:
            return (self.start - ts).total_seconds() / 86400
        if ts >= self.end:
            return (ts - self.end).total_seconds() / 86400
        return 0.0


# Two defaults that differ in every field: a field equal in both parses came from the text.
_DEFAULT_A = datetime(2001, 1, 1)
_DEFAULT_B = datetime(2002, 2, 2)


def query_date(query: str) -> DateSpan | None:
    """The day, month or year a query names ("on 1 May, 2022", "in July 2023", "in 2022"),
    as a span; None when it names no year. Relative phrases ("last week") need the time the
    question was asked, which a memory search does not have, so they are not dated.
    """
    years = [m.group(0) for m in _YEAR.finditer(query)]
    if not years:  # a month or day alone names a period in every year
        return None
    year = int(years[-1])
    # Punctuation other than commas confuses the fuzzy parser ("2022?" is not a year to it).
    text = re.sub(r"[^\w,]+", " ", query)
    try:
        a, _ = date_parser.parse(text, fuzzy_with_tokens=True, default=_DEFAULT_A)
        b, _ = date_parser.parse(text, fuzzy_with_tokens=True, default=_DEFAULT_B)
    except (ValueError, OverflowError):
        a = b = None
    if a is None or a.year != year or b.year != year:
        # Unparsed ("between August 11 and August 15 2023") or misread: the year, narrowed
        # to a month when exactly one is named.
        named = {_MONTH_NUMBER[w] for w in _words(query) if w in _MONTH_NUMBER}
        if len(named) == 1:
            return _month_span(year, named.pop())
        return DateSpan(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
    if a.month != b.month:
        return DateSpan(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC))
    if a.day != b.day:
        return _month_span(year, a.month)
    start = datetime(year, a.month, a.day, tzinfo=UTC)
    return DateSpan(start, start + timedelta(days=1))


def _month_span(year: int, month: int) -> DateSpan:
    start = datetime(year, month, 1, tzinfo=UTC)
    return DateSpan(start, datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC))
