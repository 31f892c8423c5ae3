"""Backup of the running application (an external PostgreSQL here) and restore into an empty
database and data directory: the restored data answers the same searches with the same ids and
scores, with vectors re-derived by the real model; a user erased before the backup is nowhere
in it."""

import asyncio
import uuid

import pytest

from serve_app.encoding import load_encoder
from serve_app.encoding.batcher import BatchingEncoder
from serve_app.ops import backup, restore
from serve_app.retrieval.memory_index import MemoryIndex
from serve_app.settings import Settings
from tests.integration.test_users import _ingest, _searches, traces
from tests.pg import create_database, drop_database
from tests.unit.ops.test_backup import ranked

pytestmark = pytest.mark.integration

# Not test_users' conversation: that test looks for its sentences anywhere after an erasure.
MESSAGES = [
    ("s1", "b1", "user", "Bruno", "I got a tabby cat called Miso.", "2023/03/11 (Sat) 18:00"),
    ("s1", "b2", "assistant", None, "Nice! Is she playful?", "2023/03/11 (Sat) 18:01"),
    ("s1", "b3", "user", "Bruno", "Very. I also took up the banjo.", "2023/03/11 (Sat) 18:02"),
    ("s2", "b4", "user", "Bruno", "We relocated to Porto in April.", "2023/04/20 (Thu) 08:00"),
    ("s2", "b5", "user", "Bruno", "My cousin Ines comes over in May.", "2023/04/20 (Thu) 08:04"),
]  # fmt: skip
QUERIES = ["What pet does Bruno have?", "Where did Bruno move?", "Who comes over in May?"]


async def _restored_searches(settings: Settings, user: str) -> list:
    model = settings.embedding_model
    encoder = load_encoder(model, settings.query_encoder, 1, settings.model_cache_dir)
    queries = BatchingEncoder(encoder.encode)
    index = await MemoryIndex.open(settings, model, encoder.dim, queries.encode, lambda m: None)
    try:
        out = []
        for q in QUERIES:
            found = await index.search(user, q, 5, {}, "hybrid")
            out.append([(r["id"], r["score"]) for r in found["results"]])
        return out
    finally:
        await index.close()


def test_backup_restore_same_searches_and_no_erased_user(running, tmp_path):
    user, erased = f"bk-{uuid.uuid4().hex[:8]}", f"gone-{uuid.uuid4().hex[:8]}"
    with running.client() as c:
        _ingest(c, user, MESSAGES)
        _ingest(c, erased, MESSAGES)
        assert c.delete(f"/v1/users/{erased}").status_code == 200
        before = _searches(c, user, QUERIES)
        assert backup.main([str(tmp_path / "bk")]) == 0  # online: the service keeps running
        assert _searches(c, user, QUERIES) == before

    dsn = asyncio.run(create_database("memserve_restore"))
    try:
        target = Settings(pg_dsn=dsn, data_dir=tmp_path / "restored")
        done = restore.restore(target, tmp_path / "bk")
        assert done["vectors_per_generation"][0] == done["memories"] > 0
        assert traces([user], dsn=dsn)["messages"] == len(MESSAGES)
        # erased before the backup: only the audit log's record of who erased it remains
        assert traces([erased], skip=frozenset({"audit_log"}), dsn=dsn) == {}
        after = asyncio.run(_restored_searches(target, user))
    finally:
        asyncio.run(drop_database(dsn))
    for new, old in zip(after, before, strict=True):
        assert [ids for _, ids in ranked(new)] == [ids for _, ids in ranked(old)]
        assert [s for _, s in new] == pytest.approx([s for _, s in old], abs=1e-5)
