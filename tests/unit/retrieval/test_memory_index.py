"""MemoryIndex against the machine's PostgreSQL and a Qdrant local store: edits and erasure
change both stores together, vector writes for the worker and the jobs, neighbours, linked
memories and readiness."""

from __future__ import annotations

import uuid

import pytest

from serve_app.retrieval.memory_index import MemoryIndex
from serve_app.settings import Settings
from tests.unit.retrieval.memory_data import DIM, BowModel, embed, row, store_rows

TEXTS = ["a dog", "a dog and a cat", "Paris pizza", "a guitar"]


@pytest.fixture
async def index(pg_dsn, repo, tmp_path):
    idx = await MemoryIndex.open(
        Settings(pg_dsn=pg_dsn, data_dir=tmp_path), "served", DIM, embed, BowModel
    )
    rows = [row("u", "s", i, t) for i, t in enumerate(TEXTS)]
    await idx.index(await store_rows(repo, rows), 1)
    yield idx
    await idx.close()


async def ids(index: MemoryIndex) -> dict[str, str]:
    return {r["text"]: r["id"] for r in await index.repo.index_docs("u", 1)}


async def texts(index: MemoryIndex, query: str, strategy: str = "embedding") -> list[str]:
    found = await index.search("u", query, 10, {}, strategy)
    return [r["text"] for r in found["results"]]


async def test_search_answers_results_and_time(index):
    found = await index.search("u", "pizza", 1, {"session_id": "s"}, "hybrid")
    assert [r["text"] for r in found["results"]] == ["Paris pizza"]
    assert found["took_ms"] > 0
    assert await index.search("nobody", "pizza", 1, {}, "hybrid") is None
    assert await index.count_vectors("u") == 4


async def test_an_edit_changes_both_stores_and_every_generation(index):
    other = await index.generations.create("other")
    assert await index.generations.sweep_generation(other["generation"]) == 4
    guitar = (await ids(index))["a guitar"]
    assert await texts(index, "violin", "bm25") == []  # BM25 of u is cached
    row = await index.update_memory("u", guitar, {"memory": "a violin", "importance": 0.5})
    assert (row["text"], row["index_text"], row["importance"]) == ("a violin", "a violin", 0.5)
    assert await texts(index, "violin", "bm25") == ["a violin"]  # revision moved
    assert (await texts(index, "violin"))[0] == "a violin"  # re-embedded
    # The generation of the other model lost it: the sweep embeds the new text.
    assert await index.generations.missing(other["generation"]) == 1

    await index.update_memory("u", guitar, {"metadata": {"k": "v"}})
    assert (await index.repo.get_memory("u", guitar))["text"] == "a violin"
    assert await index.generations.missing(other["generation"]) == 1
    assert await index.update_memory("u", str(uuid.uuid4()), {"memory": "x"}) is None


async def test_a_delete_removes_the_memory_from_both_stores(index):
    dog = (await ids(index))["a dog"]
    assert await index.delete_memory("u", dog)
    assert await index.count_vectors("u") == 3
    assert await index.repo.get_memory("u", dog) is None
    assert "a dog" not in await texts(index, "dog", "bm25")
    assert not await index.delete_memory("u", dog)


async def test_jobs_change_vectors_in_place(index):
    by_text = await ids(index)
    entry = await index.repo.get_memory("u", by_text["a dog"])
    upsert = {**entry, "index_text": "a violin"}
    await index.apply_vector_changes("u", [upsert], [by_text["a guitar"]])
    assert await index.count_vectors("u") == 3
    assert (await texts(index, "violin"))[0] == "a dog"  # its vector is the new text's


async def test_queries_and_entries_are_embedded_by_their_own_functions(pg_dsn, repo, tmp_path):
    """An int8 query graph beside the exact one: queries go to the first, every entry embedded
    in this process (an edit, a job's change) to the second."""
    calls: dict[str, list[str]] = {"queries": [], "entries": []}

    def recording(kind: str):
        async def embed_as(texts: list[str]) -> list[list[float]]:
            calls[kind] += texts
            return await embed(texts)

        return embed_as

    idx = await MemoryIndex.open(
        Settings(pg_dsn=pg_dsn, data_dir=tmp_path),
        "served",
        DIM,
        recording("entries"),
        BowModel,
        embed_query=recording("queries"),
    )
    try:
        await idx.index(await store_rows(repo, [row("u", "s", 0, "a guitar")]), 1)
        [hit] = (await idx.search("u", "guitar", 1, {}, "embedding"))["results"]
        await idx.update_memory("u", hit["id"], {"memory": "a violin"})
        entry = await idx.repo.get_memory("u", hit["id"])
        await idx.apply_vector_changes("u", [{**entry, "index_text": "a cat"}], [])
        assert (await texts(idx, "cat"))[0] == "a violin"  # its vector is the job's text's
        assert calls == {"queries": ["guitar", "cat"], "entries": ["a violin", "a cat"]}
        # The served generation searches with the query function after a refresh too.
        await idx.generations.refresh()
        assert idx.generations.active().target.embed == idx.retriever.target.embed
        await texts(idx, "dog")
        assert calls["queries"][-1] == "dog"
    finally:
        await idx.close()


async def test_neighbours_come_from_the_active_index(index):
    by_text = await ids(index)
    near = await index.neighbours("u", [by_text["a dog"], str(uuid.uuid4())], 1)
    assert list(near) == [by_text["a dog"]]
    [(neighbour, score)] = near[by_text["a dog"]]
    assert neighbour == by_text["a dog and a cat"] and 0 < score < 1


async def test_linked_memories_join_their_hits(index):
    by_text = await ids(index)
    await index.pool.execute(
        "INSERT INTO memory_links (user_id, src, dst, reason, score)"
        " VALUES ('u', $1::uuid, $2::uuid, 'same trip', 0.9)",
        by_text["Paris pizza"],
        by_text["a guitar"],
    )
    found = await index.search("u", "pizza", 1, {}, "hybrid", expand_links=True)
    [hit] = found["results"]
    assert [(x["text"], x["reason"], x["link_score"]) for x in hit["linked"]] == [
        ("a guitar", "same trip", pytest.approx(0.9))
    ]


async def test_erasing_a_user_empties_both_stores(index):
    assert await index.delete_user("u")
    assert await index.count_vectors("u") == 0
    assert await index.search("u", "dog", 5, {}, "hybrid") is None
    assert not await index.delete_user("u")


async def test_ready_describes_the_store_and_the_active_generation(index):
    await index.search("u", "dog", 5, {}, "bm25")
    await index.search("u", "dog", 5, {}, "embedding")  # loads u's matrix first
    assert await index.ready() == {
        "qdrant": "edge",
        "layout": "edge",
        "bm25_backend": "bm25s",
        "fusion": "score",
        "cached_users": 1,
        "index_generation": 0,
        "index_model": "served",
        "memory_version": 1,
        "vector_matrices": {
            "users": 1,
            "points": len(TEXTS),
            "budget_points": 200_000,
            "searches": {"matrix": 1},
        },
    }
