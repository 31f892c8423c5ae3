import asyncio
import json
from datetime import UTC, datetime

import pytest

from serve_app.maintenance.consolidation import Entry, decision_messages
from serve_app.maintenance.deciders import consolidation_responder, link_responder, make_decider
from serve_app.maintenance.linking import link_messages

T0 = datetime(2023, 5, 1, tzinfo=UTC)


def e(i, text):
    return Entry(i, text, T0, "s", (i,))


def test_scripted_rules_drive_the_engine_double(tmp_path):
    rules = [{"new": "teacher", "older": "nurse", "action": "delete", "reason": "job changed"}]
    msgs = decision_messages(e("n", "Now a teacher"), [e("a", "a nurse"), e("b", "likes tea")])
    reply = json.loads(consolidation_responder(rules)(msgs, {}))
    assert [d["action"] for d in reply["decisions"]] == ["delete", "keep"]

    msgs = link_messages(e("a", "marathon in Berlin"), [e("b", "running shoes"), e("c", "tea")])
    reply = json.loads(link_responder([{"a": "marathon", "b": "shoes"}])(msgs, {}))
    assert reply["links"] == [{"candidate": 1, "reason": "rule"}]

    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"consolidate": rules}))
    decider = make_decider(f"scripted:{path}", 0.95)
    d = asyncio.run(decider.decide(e("n", "Now a teacher"), [e("a", "a nurse")]))
    assert [c.action for c in d.decisions] == ["delete"]
    with pytest.raises(ValueError):
        make_decider("magic", 0.95)
