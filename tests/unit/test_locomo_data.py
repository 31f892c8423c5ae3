import json
from datetime import UTC, datetime

import pytest

from benchmarks.locomo_data import evidence_recall, load_conversations, parse_locomo_datetime


def test_parse_locomo_datetime():
    assert parse_locomo_datetime("1:56 pm on 8 May, 2023") == datetime(
        2023, 5, 8, 13, 56, tzinfo=UTC
    )
    assert parse_locomo_datetime("12:09 am on 13 September, 2023").hour == 0
    assert parse_locomo_datetime("12:30 pm on 1 January, 2022").hour == 12
    with pytest.raises(ValueError):
        parse_locomo_datetime("yesterday")


def test_evidence_recall_counts_distinct_ids_up_to_k():
    ranked = [["a", "b"], ["a"], ["c", "d"], ["e"]]
    assert evidence_recall(ranked, ["c"], 3) == 1.0
    assert evidence_recall(ranked, ["d"], 3) == 0.0  # budget spent on a, b, c
    assert evidence_recall(ranked, ["a", "e"], 5) == 1.0
    assert evidence_recall(ranked, ["a", "e"], 1) == 0.5


def test_load_flat_and_official_layouts(tmp_path):
    conv = {
        "speaker_a": "Ann",
        "speaker_b": "Bob",
        "session_2_date_time": "9:00 am on 2 June, 2023",
        "session_2": [{"speaker": "Bob", "dia_id": "D2:1", "text": "Back again"}],
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi"},
            {"speaker": "Bob", "dia_id": "D1:2", "text": "Look", "blip_caption": "a cat"},
        ],
        "session_3_date_time": "9:00 am on 3 June, 2023",
    }
    qa = [
        {"question": "q1", "answer": "x", "evidence": ["D1:2; D2:1"], "category": 1},
        {"question": "q2", "answer": 2022, "evidence": ["D"], "category": 2},
        {"question": "q5", "evidence": ["D1:1"], "category": 5},
    ]
    (tmp_path / "conv-1.json").write_text(json.dumps({**conv, "qa": qa}))
    (tmp_path / "conv-2.json").write_text(
        json.dumps([{"sample_id": "s-9", "conversation": conv, "qa": qa}])
    )
    flat, official = load_conversations(tmp_path)
    assert (flat.conv_id, official.conv_id) == ("conv-1", "s-9")
    for c in (flat, official):
        assert [s.session_id for s in c.sessions] == ["session_1", "session_2"]
        assert c.sessions[0].turns[1].content == "Look [shares image: a cat]"
        assert [(q.question, q.evidence) for q in c.questions] == [("q1", ("D1:2", "D2:1"))]
    msgs = flat.stored_messages()
    assert [(m.session_id, m.message_id, m.seq, m.name) for m in msgs] == [
        ("session_1", "D1:1", 0, "Ann"),
        ("session_1", "D1:2", 1, "Bob"),
        ("session_2", "D2:1", 0, "Bob"),
    ]
    assert msgs[2].ts == datetime(2023, 6, 2, 9, 0, tzinfo=UTC)
    assert all(m.user_id == "conv-1" for m in msgs)
