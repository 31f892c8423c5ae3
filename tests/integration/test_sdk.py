"""memserve.MemoryClient and AsyncMemoryClient against the live service, including a retried
add whose first answer is lost after the service stored the messages."""

from __future__ import annotations

import uuid

import httpx
import pytest

import memserve
from memserve import AsyncMemoryClient, MemoryClient, Retry

pytestmark = pytest.mark.integration

FAST = Retry(attempts=3, backoff_s=0.05)

DOG = [
    {"role": "user", "name": "Alice", "content": "I adopted a golden retriever named Max.",
     "timestamp": "2023/05/20 (Sat) 10:00"},
    {"role": "assistant", "content": "Lovely! How old is he?",
     "timestamp": "2023/05/20 (Sat) 10:01"},
    {"role": "user", "name": "Alice", "content": "He is two. I also started learning the cello.",
     "timestamp": "2023-05-20T10:02Z"},
]  # fmt: skip


def _lost(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        503,
        request=request,
        json={"error": {"code": "unavailable", "message": "answer lost on the way back"}},
    )


class LoseFirstAnswer(httpx.HTTPTransport):
    """Delivers every request, but the first POST's answer never reaches the client."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and not self.lost:
            response.read()
            self.lost += 1
            return _lost(request)
        return response


class AsyncLoseFirstAnswer(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.method == "POST" and not self.lost:
            await response.aread()
            self.lost += 1
            return _lost(request)
        return response


def test_sync_client_end_to_end(running, agent_key):
    user = f"sdk-{uuid.uuid4().hex[:8]}"
    with MemoryClient(running.url, agent_key, retry=FAST) as c:
        added = c.add(DOG, user_id=user, session_id="s1", metadata={"src": "sdk"}, wait=True)
        assert (added.accepted, added.pending, len(added.message_ids)) == (3, 0, 3)

        found = c.search("What dog does Alice have?", user_id=user, limit=3)
        assert "golden retriever" in found.results[0].memory
        assert found.results[0].timestamp.year == 2023
        only_s2 = c.search("dog", user_id=user, filters={"session_id": "s2"})
        assert only_s2.results == []

        every = list(c.list(user_id=user, page_size=1))
        assert len(every) == len({m.id for m in every}) >= 3

        first = every[0]
        assert c.get(first.id, user_id=user).memory == first.memory
        changed = c.update(first.id, user_id=user, memory="Alice's dog Max is two.", importance=0.9)
        assert changed.memory == "Alice's dog Max is two."
        assert changed.importance == pytest.approx(0.9)  # stored as a 4-byte float

        status = c.session("s1", user_id=user)
        assert status.messages.received == 3 and status.messages.failed == 0

        assert c.delete(first.id, user_id=user).id == first.id
        with pytest.raises(memserve.NotFound) as e:
            c.get(first.id, user_id=user)
        assert e.value.code == "unknown_memory"
        with pytest.raises(memserve.Forbidden):  # index generations: admin only
            c.generations()

        assert c.delete_user(user).deleted
        with pytest.raises(memserve.NotFound):
            c.search("dog", user_id=user)


def test_a_retried_add_stores_each_message_once(running, agent_key):
    user = f"sdk-{uuid.uuid4().hex[:8]}"
    transport = LoseFirstAnswer()
    with MemoryClient(running.url, agent_key, retry=FAST, transport=transport) as c:
        res = c.add(DOG[:2], user_id=user, session_id="s1", wait=True)
        assert transport.lost == 1
        # The retry found both messages already stored: nothing new was accepted.
        assert res.accepted == 0 and len(res.message_ids) == 2
        assert c.session("s1", user_id=user).messages.received == 2
        assert len(list(c.list(user_id=user))) == 2
        c.delete_user(user)


def test_session_flush_when_the_service_offers_it(running, agent_key):
    with running.anonymous() as http:
        paths = http.get("/openapi.json").json()["paths"]
    if "/v1/sessions/{session_id}/flush" not in paths:
        pytest.skip("this service has no session flush route")
    user = f"sdk-{uuid.uuid4().hex[:8]}"
    with MemoryClient(running.url, agent_key) as c:
        c.add("I moved to Lisbon last spring.", user_id=user, session_id="s9")
        assert c.flush("s9", user_id=user) is not None
        c.delete_user(user)


async def test_async_client_with_a_retried_add(running, agent_key):
    user = f"sdk-{uuid.uuid4().hex[:8]}"
    transport = AsyncLoseFirstAnswer()
    async with AsyncMemoryClient(running.url, agent_key, retry=FAST, transport=transport) as c:
        res = await c.add(DOG, user_id=user, session_id="a1", wait=True)
        assert transport.lost == 1 and res.accepted == 0 and res.pending == 0
        st = await c.session("a1", user_id=user)
        assert st.messages.received == 3
        hits = (await c.search("cello", user_id=user, strategy="bm25")).results
        assert "cello" in hits[0].memory
        ids = [m.id async for m in c.list(user_id=user, session_id="a1", page_size=2)]
        assert len(ids) == len(set(ids)) >= 3
        await c.delete(ids[0], user_id=user)
        with pytest.raises(memserve.NotFound):
            await c.get(ids[0], user_id=user)
        await c.delete_user(user)


def test_keys_audit_and_a_revoked_key(running, agent_key):
    with MemoryClient(running.url, running.admin_key, retry=FAST) as admin:
        made = admin.create_key("sdk-audit", "short-lived", rate_limit_per_min=100)
        assert made.key and made.tenant == "sdk-audit" and made.rate_limit_per_min == 100
        assert made.id in [k.id for k in admin.list_keys("sdk-audit")]
        with MemoryClient(running.url, made.key, retry=FAST) as tenant:
            tenant.add("I write in pencil.", user_id="pat", session_id="s1")
            mine = list(tenant.audit_entries(user_id="pat"))
            assert [e.action for e in mine] == ["add"] and mine[0].tenant == "sdk-audit"
            assert admin.revoke_key(made.id).revoked_at is not None
            with pytest.raises(memserve.Unauthorized) as e:
                tenant.search("pencil", user_id="pat")
            assert e.value.status == 401
    with MemoryClient(running.url, agent_key) as agent, pytest.raises(memserve.Forbidden):
        agent.list_keys()
    with MemoryClient(running.url, running.admin_key) as admin:
        assert admin.generations().model_dump()
    with MemoryClient(running.url) as nobody, pytest.raises(memserve.Unauthorized) as e:
        nobody.search("pencil", user_id="pat")
    assert e.value.code == "missing_key"
