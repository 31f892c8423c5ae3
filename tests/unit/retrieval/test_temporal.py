from datetime import UTC, datetime

import pytest

from serve_app.retrieval.temporal import DateSpan, asks_time, mentions_time, query_date, vocabulary


@pytest.mark.parametrize(
    "text",
    [
        "I took my kids to a park yesterday.",
        "I've known these friends for 4 years, since I moved.",
        "This book I read last year reminds me to always pursue my dreams",
        "We're planning a team trip next month",
        "I painted that in 2022",
        "Had a wicked day out with the gang last weekend",
        "I'll see you on Friday",
    ],
)
def test_memories_that_state_a_time(text):
    assert mentions_time(text)


@pytest.mark.parametrize(
    "text",
    [
        "Thanks, Caroline! That means a lot to me.",
        "You may like this painting of a sunset",  # "may" the verb
        "The mon ami song is great",  # an abbreviation is not a weekday
    ],
)
def test_memories_without_a_time(text):
    assert not mentions_time(text)


@pytest.mark.parametrize(
    "query",
    [
        "When did Melanie go to the park?",
        "How long has Caroline had her current group of friends for?",
        "What year did Tim go to the Smoky Mountains?",
        "What did Jon do before the launch?",
        "How long ago was Caroline's 18th birthday?",
        "What movie did Joanna watch on 1 May, 2022?",
    ],
)
def test_questions_about_time(query):
    assert asks_time(query)


@pytest.mark.parametrize(
    "query", ["What books has Melanie read?", "Would Caroline be considered religious?"]
)
def test_questions_not_about_time(query):
    assert not asks_time(query)


def _span(y1, m1, d1, y2, m2, d2) -> DateSpan:
    return DateSpan(datetime(y1, m1, d1, tzinfo=UTC), datetime(y2, m2, d2, tzinfo=UTC))


@pytest.mark.parametrize(
    ("query", "span"),
    [
        ("What movie did Joanna watch on 1 May, 2022?", _span(2022, 5, 1, 2022, 5, 2)),
        ("What did Tim do in July 2023?", _span(2023, 7, 1, 2023, 8, 1)),
        ("What did Jon do in 2022?", _span(2022, 1, 1, 2023, 1, 1)),
        ("What did Nate do in December 2022?", _span(2022, 12, 1, 2023, 1, 1)),
        # The parser gives up on two dates; the one named month and the year remain.
        ("Where was John between August 11 and August 15 2023?", _span(2023, 8, 1, 2023, 9, 1)),
    ],
)
def test_query_date_spans(query, span):
    assert query_date(query) == span


@pytest.mark.parametrize(
    "query",
    [
        "When did Caroline go to the LGBTQ support group?",
        "What did Tim do last week?",  # relative: needs the time the question was asked
        "What did Tim do in July?",  # a month of every year
    ],
)
def test_query_without_an_absolute_date(query):
    assert query_date(query) is None


def test_distance_to_a_span_in_days():
    span = _span(2023, 7, 1, 2023, 8, 1)
    assert span.distance_days(datetime(2023, 7, 15, tzinfo=UTC)) == 0
    assert span.distance_days(datetime(2023, 6, 29, tzinfo=UTC)) == 2
    assert span.distance_days(datetime(2023, 8, 4, tzinfo=UTC)) == 3


def test_vocabulary_comes_from_the_locale_data():
    vocab = vocabulary()
    assert {"yesterday", "weeks", "july", "saturday", "ago"} <= vocab.words
    assert {"last week", "next month", "this year"} <= set(vocab.phrases)
    assert "may" not in vocab.words
