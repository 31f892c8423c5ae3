"""The index-generation lifecycle against the machine's PostgreSQL and a Qdrant local store:
create, fill (sweep), activate, roll back, retire (collections and orphaned memory versions
dropped), and one rebuild at a time."""

from __future__ import annotations

import pytest

from serve_app.retrieval.generations import IndexGenerations
from serve_app.retrieval.hybrid import SearchTarget
from serve_app.storage.vectors import VectorPoint
from tests.unit.retrieval.memory_data import DIM, T0, BowModel, embed, row, store_rows


class Lifecycle:
    def __init__(self, repo, vectors) -> None:
        self.repo = repo
        self.targets: list[SearchTarget] = []
        self.loaded: list[str] = []
        self.gens = IndexGenerations(
            repo.pool, vectors, "served", embed, self._load, self.targets.append
        )

    def _load(self, model: str) -> BowModel:
        self.loaded.append(model)
        return BowModel(model)

    def statuses(self) -> dict[int, str]:
        return {g["generation"]: g["status"] for g in self.gens.status()["generations"]}

    async def collections(self) -> set[str]:
        found = await self.gens.vectors.client.get_collections()
        return {c.name.split("__u")[0] for c in found.collections}


@pytest.fixture
async def life(repo, vectors):
    life = Lifecycle(repo, vectors)
    await life.gens.start()
    rows = [row("u", "s", i, t) for i, t in enumerate(["a dog", "a cat", "Paris pizza"])]
    points = await store_rows(repo, rows)
    await life.gens.write_served(points, 1)
    return life


async def test_start_makes_generation_zero_of_the_served_model(life, vectors):
    assert life.gens.status() == {
        "generations": [
            {
                "generation": 0,
                "model": "served",
                "dim": DIM,
                "status": "active",
                "memory_version": 1,
                "extraction": None,
            }
        ]
    }
    assert life.targets == []  # generation 0 is what search starts on
    assert life.gens.active().store is vectors
    await life.gens.start()  # a second replica: nothing changes
    assert life.statuses() == {0: "active"}
    assert await vectors.count("u") == 3


async def test_a_rebuild_to_another_model_fills_switches_and_rolls_back(life, vectors):
    gens = life.gens
    created = await gens.create("other")
    assert created == {"generation": 1, "dim": DIM + 2, "model": "other", "memory_version": 1}
    assert await gens.create("other") == created  # a restarted job continues the same one
    assert life.loaded == ["other"]
    with pytest.raises(RuntimeError, match="still lacks 3 entries"):
        await gens.activate(1)
    assert await gens.missing(1) == 3
    assert await gens.sweep_generation(1, limit=2) == 2
    assert await gens.sweep_generation(1) == 1
    assert await gens.sweep_generation(1) == 0
    other = (await gens.known(1)).store
    assert (other.base, other.dim, await other.count("u")) == ("t__g1", DIM + 2, 3)

    switched = await gens.activate(1)
    assert (switched["active"], switched["replaced"], switched["memory_version"]) == (1, 0, 1)
    assert switched["dropped"] == [] and switched["requeued"] == {"messages": 0, "tasks": 0}
    assert life.statuses() == {0: "previous", 1: "active"}
    assert life.targets[-1].store is other and life.targets[-1].memory_version == 1
    [query] = await life.targets[-1].embed(["a dog"])
    assert query == BowModel("other").encode(["a dog"])[0]

    # Written while 1 is active: the served (previous) generation takes the vector as is,
    # generation 1 embeds it itself in the next maintenance pass.
    points = await store_rows(life.repo, [row("u", "s", 9, "a guitar")])
    await gens.write_served(points, 1)
    assert (await vectors.count("u"), await other.count("u")) == (4, 3)
    await gens.maintain_once()
    assert await other.count("u") == 4 and await gens.missing(1) == 0

    back = await gens.rollback()
    assert (back["active"], back["replaced"]) == (0, 1)
    assert life.statuses() == {0: "active", 1: "previous"}
    assert life.targets[-1] == SearchTarget(vectors, embed, 1)
    with pytest.raises(ValueError, match="cannot activate"):
        await gens.activate(0)  # already active


async def test_a_new_memory_version_retires_what_is_two_switches_old(life, vectors):
    gens = life.gens
    await gens.create("other")  # abandoned by the build below
    assert await gens.sweep_generation(1) == 3
    assert "t__g1" in await life.collections()
    built = await gens.create_memory_version({"prompt": "p"})
    assert built == {
        "generation": 2,
        "model": "served",
        "dim": DIM,
        "memory_version": 2,
        "served": True,
    }
    assert life.statuses() == {0: "active", 2: "building"}
    assert "t__g1" not in await life.collections()  # the abandoned build is dropped
    assert await gens.create_memory_version({}, resume=2) == built

    # The re-extraction writes version 2 into generation 2 only.
    v2 = [row("u", "s", 0, "v2 a dog", version=2)]
    points = await store_rows(life.repo, v2)
    await gens.index(2, points)
    await gens.mark_members(2, [(r.id, await _updated_at(life.repo, r.id)) for r in v2])
    await gens.write_served(points, 2)  # a served generation of version 2 takes it too
    switched = await gens.activate(2)
    assert (switched["active"], switched["memory_version"]) == (2, 2)
    assert life.targets[-1].memory_version == 2
    assert await (await gens.known(2)).store.count("u") == 1
    with pytest.raises(ValueError, match="no longer building"):
        await gens.create_memory_version({}, resume=2)

    # Another version, activated after a rollback: generation 2 (version 2) is two switches
    # old, so it is retired, its collections dropped and version 2's entries deleted.
    await gens.rollback()
    gen3 = await gens.create_memory_version({"prompt": "q"})
    assert gen3["memory_version"] == 3
    switched = await gens.activate(3)
    assert switched["dropped"] == [2]
    assert life.statuses() == {0: "previous", 3: "active"}
    assert "t__g2" not in await life.collections()
    assert await life.repo.pool.fetchval("SELECT count(*) FROM memory_entries WHERE version=2") == 0
    assert await life.repo.pool.fetchval("SELECT count(*) FROM memory_entries WHERE version=1") == 3
    with pytest.raises(ValueError, match="no live index generation 2"):
        await gens.known(2)


async def test_erasure_and_deletes_reach_every_live_generation(life, vectors):
    gens = life.gens
    await gens.create("other")
    await gens.sweep_generation(1)
    other = (await gens.known(1)).store
    ids = [r["id"] for r in await life.repo.index_docs("u", 1)]
    await gens.delete_everywhere("u", ids[:1])
    assert (await vectors.count("u"), await other.count("u")) == (2, 2)
    await gens.delete_points(1, "u", ids[1:2])
    assert (await vectors.count("u"), await other.count("u")) == (2, 1)
    await gens.delete_user("u")
    assert (await vectors.count("u"), await other.count("u")) == (0, 0)
    point = VectorPoint(ids[0], BowModel("other").encode(["x"])[0], "u", "s", T0, None)
    await gens.index(1, [point])
    assert await other.count("u") == 1


async def test_a_rollback_needs_a_previous_generation(life):
    with pytest.raises(ValueError, match="no previous index generation"):
        await life.gens.rollback()


async def _updated_at(repo, entry_id: str):
    return await repo.pool.fetchval(
        "SELECT updated_at FROM memory_entries WHERE id=$1::uuid", entry_id
    )


async def test_changed_stores_of_every_generation_are_compacted_at_most_every_interval(life):
    gens = life.gens
    await gens.create("other")
    calls = []

    def counting(n: int):
        async def compact() -> bool:
            calls.append(n)
            return True

        return compact

    for g in gens.generations.values():
        g.store.compact = counting(g.number)
    assert await gens.compact(every_s=3600) == 2 and sorted(calls) == [0, 1]
    assert await gens.compact(every_s=3600) == 0 and len(calls) == 2  # within the interval
    assert await gens.compact(every_s=0) == 2 and len(calls) == 4
