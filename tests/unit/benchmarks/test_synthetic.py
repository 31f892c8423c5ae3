"""Synthetic load data: reproducible, varied, and accepted by the API as it stands."""

from __future__ import annotations

from benchmarks.synthetic import chunks, questions, session_messages
from memserve.models import AddMemoriesRequest, SearchRequest


def test_sessions_are_reproducible_and_ids_unique():
    a = session_messages("s1", 200, seed=1)
    assert a == session_messages("s1", 200, seed=1)
    assert len({m.message_id for m in a}) == 200
    assert [m.ts for m in a] == sorted(m.ts for m in a)
    assert session_messages("s2", 200, seed=1)[0].message_id != a[0].message_id


def test_messages_are_varied_and_chat_sized():
    msgs = session_messages("s1", 500, seed=0)
    texts = [m.content for m in msgs]
    assert len(set(texts)) >= 495
    words = [len(t.split()) for t in texts]
    assert min(words) >= 5 and max(words) <= 120
    assert {m.role for m in msgs} == {"user", "assistant"}
    assert len({m.name for m in msgs}) == 2


def test_payloads_pass_the_api_validation():
    msgs = session_messages("s1", 1000, seed=0)
    for part in chunks(msgs, 1000):
        req = AddMemoriesRequest(
            user_id="bench-u1", session_id="s1", messages=[m.to_api() for m in part], wait=True
        )
        assert len(req.messages) == len(part)
    for q in questions(50):
        SearchRequest(user_id="bench-u1", query=q, strategy="hybrid")


def test_chunks_cover_everything_in_order():
    assert list(chunks(list(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
