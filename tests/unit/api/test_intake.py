from datetime import UTC, datetime

from memserve.models import AddMemoriesRequest
from serve_app.api.intake import new_messages, wait_processed

NOW = datetime(2024, 1, 2, 3, 4, tzinfo=UTC)


def test_new_messages_fill_ids_and_times_and_carry_the_metadata():
    req = AddMemoriesRequest(
        user_id="u",
        session_id="s",
        metadata={"k": 1},
        messages=[
            {"role": "user", "content": "hi", "message_id": "m1",
             "timestamp": "2023-05-01T10:00:00Z"},
            {"role": "assistant", "content": "hello", "name": "bot"},
        ],
    )  # fmt: skip
    a, b = new_messages(req, NOW)
    assert (a.message_id, a.ts_provided, a.ts) == ("m1", True, datetime(2023, 5, 1, 10, tzinfo=UTC))
    assert b.message_id and b.message_id != "m1"
    assert (b.ts, b.ts_provided, b.name, b.role) == (NOW, False, "bot", "assistant")
    assert a.metadata == b.metadata == {"k": 1}


async def test_wait_processed_polls_until_done_or_the_deadline():
    class Repo:
        def __init__(self, answers):
            self.answers = answers

        async def count_unfinished(self, user_id, session_id, ids):
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    assert await wait_processed(Repo([2, 1, 0]), "u", "s", ["m"], timeout_s=5) == 0
    assert await wait_processed(Repo([3]), "u", "s", ["m"], timeout_s=0.05) == 3
