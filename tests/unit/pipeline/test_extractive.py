from datetime import UTC, datetime

import pytest

from serve_app.model.messages import StoredMessage
from serve_app.pipeline.extractive import ENTRY_UNITS, build_entries

TS = datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def msg(
    i: int, content: str, name: str | None = "Caroline", session: str = "s1", role: str = "user"
) -> StoredMessage:
    return StoredMessage(
        user_id="u",
        session_id=session,
        message_id=f"m{i}",
        seq=i,
        role=role,
        name=name,
        content=content,
        ts=TS,
        metadata={},
    )


MSGS = [
    msg(0, "Hey Mel! How have you been?"),
    msg(1, "Swamped with the kids. What's new?", name="Melanie"),
    msg(2, "I went to a support group yesterday. [shares image: a photo of a sign]"),
]


def test_message_unit_prefixes_date_and_speaker():
    entries = build_entries(MSGS, None, unit="message")
    assert [e.text for e in entries] == [
        "[8 May 2023, Monday] Caroline: Hey Mel! How have you been?",
        "[8 May 2023, Monday] Melanie: Swamped with the kids. What's new?",
        "[8 May 2023, Monday] Caroline: I went to a support group yesterday. "
        "[shares image: a photo of a sign]",
    ]
    assert all(e.index_text == e.text for e in entries)
    assert [e.source_message_ids for e in entries] == [["m0"], ["m1"], ["m2"]]
    assert [e.speaker for e in entries] == ["Caroline", "Melanie", "Caroline"]
    assert all(e.session_id == "s1" and e.ts == TS for e in entries)


def test_message_ctx_adds_previous_turn_to_index_text_only():
    entries = build_entries(MSGS, None, unit="message_ctx")
    assert entries[0].index_text == entries[0].text
    assert entries[1].text == "[8 May 2023, Monday] Melanie: Swamped with the kids. What's new?"
    assert entries[1].index_text.startswith(entries[1].text)
    assert "Caroline: Hey Mel! How have you been?" in entries[1].index_text
    assert entries[1].source_message_ids == ["m1"]
    assert entries[1].metadata["context_message_ids"] == ["m0"]


def test_previous_message_gives_context_to_the_first_of_a_batch():
    whole = build_entries(MSGS, None, unit="message_ctx")
    split = build_entries(MSGS[:1], None, unit="message_ctx") + build_entries(
        MSGS[1:], MSGS[0], unit="message_ctx"
    )
    assert whole == split


def test_previous_from_another_session_is_ignored():
    other = msg(9, "Unrelated", session="s0")
    assert build_entries(MSGS[:1], other, unit="message_ctx")[0].index_text == (
        "[8 May 2023, Monday] Caroline: Hey Mel! How have you been?"
    )


def test_long_context_is_clipped():
    prev = msg(0, "word " * 500)
    entry = build_entries([msg(1, "Yes", name="Melanie")], prev, unit="message_ctx")[0]
    assert len(entry.index_text) < len(entry.text) + 350


@pytest.mark.parametrize(("unit", "groups"), [("window2", [2, 1]), ("window3", [3])])
def test_windows_cite_every_message(unit: str, groups: list[int]):
    entries = build_entries(MSGS, None, unit=unit)
    assert [len(e.source_message_ids) for e in entries] == groups
    assert entries[0].text.startswith("[8 May 2023, Monday] Caroline: Hey Mel!")
    assert "\nMelanie: Swamped" in entries[0].text
    assert entries[0].speaker is None  # two speakers
    assert entries[0].metadata == {"unit": unit}


def test_role_is_the_speaker_without_a_name_and_empty_messages_are_skipped():
    entries = build_entries(
        [msg(0, "  ", name=None), msg(1, "Use the tool", name=None, role="assistant")],
        None,
        unit="message",
    )
    assert [e.text for e in entries] == ["[8 May 2023, Monday] assistant: Use the tool"]


def test_without_date_and_with_sessions_mixed():
    entries = build_entries(
        [msg(0, "a b", session="s1"), msg(1, "c d", session="s2")],
        None,
        unit="message_ctx",
        with_date=False,
    )
    assert [e.text for e in entries] == ["Caroline: a b", "Caroline: c d"]
    assert entries[1].index_text == "Caroline: c d"  # no context across sessions


def test_units_are_validated():
    assert "message_ctx" in ENTRY_UNITS
    with pytest.raises(ValueError):
        build_entries(MSGS, None, unit="paragraph")  # type: ignore[arg-type]
