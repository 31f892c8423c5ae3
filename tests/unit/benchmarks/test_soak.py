"""The soak's pure parts: the operation mix a client picks and the memory growth report."""

import random
from datetime import UTC, datetime

from benchmarks import soak
from benchmarks.locomo_data import LocomoConversation, LocomoSession, LocomoTurn

CONV = LocomoConversation(
    "c",
    ("Ann", "Bob"),
    [
        LocomoSession(
            "session_1",
            datetime(2023, 5, 20, tzinfo=UTC),
            tuple(LocomoTurn(f"D1:{i}", "Ann", f"turn {i}") for i in range(5)),
        )
    ],
)


def test_memory_report_measures_growth_over_the_second_half():
    samples = [
        {"t_s": 0, "Ingress#1": 100.0, "Embedder#2": 500.0},
        {"t_s": 30, "Ingress#1": 120.0, "Embedder#2": 510.0},
        {"t_s": 60, "Ingress#1": 121.0, "Embedder#2": 505.0},
        {"t_s": 90, "Ingress#1": 125.5},  # the embedder restarted under another pid
    ]
    assert soak.memory_report(samples) == {
        "Embedder#2": {"first_mb": 500.0, "last_mb": 505.0, "max_mb": 510.0,
                       "second_half_growth_mb": 0.0},
        "Ingress#1": {"first_mb": 100.0, "last_mb": 125.5, "max_mb": 125.5,
                      "second_half_growth_mb": 4.5},
    }  # fmt: skip


def test_a_client_edits_and_deletes_only_what_it_listed():
    client = soak.Client(0, CONV, random.Random(3), "r")
    assert client.pick() == "add"
    client.next_turn = 1
    picks = [client.pick() for _ in range(400)]
    assert "edit" not in picks and "delete" not in picks  # nothing listed yet
    assert {"add", "search", "list"} <= set(picks)
    client.known = ["a"]
    assert {"edit", "delete"} <= {client.pick() for _ in range(400)}
    client.next_turn = len(client.turns)
    assert "add" not in {client.pick() for _ in range(400)}
    assert "erase" in {client.pick() for _ in range(400)}


async def test_a_client_that_used_up_its_conversation_erases_its_user_and_starts_again():
    import httpx

    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        return httpx.Response(200, json={"deleted": True, "memories": [{"id": "a"}]})

    client = soak.Client(0, CONV, random.Random(3), "r")
    client.next_turn, client.known = len(client.turns), ["a"]
    log = soak.Log(window_s=30)
    transport = httpx.MockTransport(answer)
    async with httpx.AsyncClient(base_url="http://soak", transport=transport) as c:
        while not any("/users/" in path for _, path in seen):
            await client.step(c, log)
    seen = [s for s in seen if "/users/" in s[1]]
    assert seen == [("DELETE", "/v1/users/soak-r-0")]
    assert (client.user, client.next_turn, client.known) == ("soak-r-0-r1", 0, [])
    assert client.pick() == "add" and log.counts["erase"] == 1 and not log.errors


def test_replica_memory_gives_each_replica_its_rss_and_the_anonymous_part(monkeypatch):
    import os
    from types import SimpleNamespace

    import ray.util.state

    me = SimpleNamespace(pid=os.getpid(), class_name="ServeReplica:memserve:Ingress")
    gone = SimpleNamespace(pid=2**22 + 7, class_name="ServeReplica:memserve:Embedder")
    other = SimpleNamespace(pid=os.getpid(), class_name="SomeActor")
    monkeypatch.setattr(ray.util.state, "list_actors", lambda **kw: [me, gone, other])
    monkeypatch.setattr(soak, "cluster_address", lambda: "127.0.0.1:1")
    rss, anon = soak.replica_memory()
    name = f"Ingress#{os.getpid()}"
    assert set(rss) == set(anon) == {name}
    # This process maps its libraries from files: those pages are in RSS, not in the rest.
    assert 0 < anon[name] < rss[name]
