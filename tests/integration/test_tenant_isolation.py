"""Property: whatever two tenants do, interleaved (adds, edits, deletes, erasures, searches,
lists), neither is ever shown anything of the other's. Both tenants use the same user ids;
every text carries its tenant's marker, so a leak is visible in any response body."""

import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

USERS = ("alice", "bob")
WORDS = ("garden", "violin", "harbour", "lemon")
ops = st.lists(
    st.tuples(
        st.sampled_from((0, 1)),  # which tenant acts
        st.sampled_from(("add", "edit", "delete", "erase", "search", "list", "get")),
        st.sampled_from(USERS),
        st.sampled_from(WORDS),
    ),
    min_size=4,
    max_size=10,
)


@pytest.fixture(scope="module")
def tenants(running):
    keys = []
    with running.client() as admin:
        for i in range(2):
            tenant = f"iso{i}-{uuid.uuid4().hex[:6]}"
            keys.append(admin.post("/v1/keys", json={"tenant": tenant, "name": "p"}).json())
    return keys


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=ops)
def test_interleaved_tenants_never_see_each_other(running, tenants, script):
    markers = [f"marker{i}x{uuid.uuid4().hex[:8]}" for i in range(2)]
    clients = [running.client(k["key"]) for k in tenants]
    seen_ids: list[set[str]] = [set(), set()]
    try:
        for who, op, user, word in script:
            c, other = clients[who], markers[1 - who]
            bodies = run(c, op, user, f"{markers[who]} {word}", word, seen_ids[who])
            for body in bodies:
                assert other not in body, (op, body)
                for mid in seen_ids[1 - who]:
                    assert mid not in body, (op, body)
    finally:
        for c in clients:
            for user in USERS:
                c.delete(f"/v1/users/{user}")
            c.close()


def run(c: httpx.Client, op: str, user: str, text: str, word: str, mine: set[str]) -> list[str]:
    """Do `op`; the response bodies it read (ids it created go into `mine`)."""
    if op == "add":
        r = c.post(
            "/v1/memories",
            json={
                "user_id": user,
                "session_id": "s",
                "wait": True,
                "messages": [{"role": "user", "content": text}],
            },
        )
        assert r.status_code == 200, r.text
        listed = c.get("/v1/memories", params={"user_id": user})
        mine.update(m["id"] for m in listed.json()["memories"])
        return [r.text, listed.text]
    if op == "search":
        r = c.post("/v1/search", json={"user_id": user, "query": word})
        assert r.status_code in (200, 404), r.text
        return [r.text]
    listed = c.get("/v1/memories", params={"user_id": user})
    assert listed.status_code in (200, 404), listed.text
    out = [listed.text]
    ids = [m["id"] for m in listed.json().get("memories", [])]
    if op == "list" or not ids:
        return out
    mid = ids[0]
    if op == "get":
        out.append(c.get(f"/v1/memories/{mid}", params={"user_id": user}).text)
    elif op == "edit":
        r = c.patch(f"/v1/memories/{mid}", params={"user_id": user}, json={"memory": text})
        assert r.status_code == 200, r.text
        out.append(r.text)
    elif op == "delete":
        assert c.delete(f"/v1/memories/{mid}", params={"user_id": user}).status_code == 200
    elif op == "erase":
        assert c.delete(f"/v1/users/{user}").status_code == 200
    return out
