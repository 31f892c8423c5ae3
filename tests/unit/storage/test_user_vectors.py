"""Users' vectors as numpy matrices (serve_app/storage/user_vectors.py): exact cosine search with
filters, snapshots that later writes never change, and the cache's point budget."""

import uuid
from datetime import timedelta

import numpy as np
import pytest

from serve_app.storage.user_vectors import UserVectorCache, UserVectors
from serve_app.storage.vectors import VectorFilters
from tests.unit.storage.test_vectors_congruence import (
    DIM,
    FILTERS,
    T0,
    _brute_force,
    _points,
    assert_ranked,
)


def _rows(pts):
    return [
        (p.id, p.vector, p.session_id, p.ts.timestamp(), (p.speaker or "").lower()) for p in pts
    ]


def _alice():
    return [p for p in _points() if p.user_id == "alice"]


@pytest.mark.parametrize("name", list(FILTERS))
def test_search_is_the_exact_cosine_ranking_under_each_filter(name):
    pts = _alice()
    snap = UserVectors.build(_rows(pts), DIM)
    q = np.random.default_rng(3).normal(size=DIM)
    for limit in (1, 7, 100):
        assert_ranked(
            snap.search(q, limit, FILTERS[name]),
            _brute_force(pts, "alice", q, limit, FILTERS[name]),
        )


def test_a_filter_nothing_passes_and_an_empty_snapshot_find_nothing():
    snap = UserVectors.build(_rows(_alice()), DIM)
    assert snap.search(np.ones(DIM), 5, VectorFilters(session_id="nope")) == []
    assert UserVectors.build([], DIM).search(np.ones(DIM), 5) == []
    assert snap.search(np.ones(DIM), 0) == []


def test_writes_make_new_snapshots_and_leave_earlier_ones_as_they_were():
    pts = _alice()
    first = UserVectors.build(_rows(pts[:10]), DIM)
    q = np.asarray(pts[12].vector)
    before = first.search(q, 10)
    # Appends fill spare rows of a shared buffer; replacing and deleting copy.
    grown = first.with_rows(_rows(pts[10:20]))
    grown = grown.with_rows(_rows(pts[20:]))
    moved = pts[3].__class__(**{**pts[3].__dict__, "vector": list(q), "session_id": "s9"})
    replaced = grown.with_rows(_rows([moved]))
    fewer = replaced.without([pts[12].id, "not-there"])
    assert first.search(q, 10) == before  # untouched by every write after it
    assert_ranked(grown.search(q, 10), _brute_force(pts, "alice", q, 10))
    after = [moved if p.id == moved.id else p for p in pts]
    assert_ranked(replaced.search(q, 30), _brute_force(after, "alice", q, 30))
    assert_ranked(
        replaced.search(q, 5, VectorFilters(session_id="s9")),
        _brute_force(after, "alice", q, 5, VectorFilters(session_id="s9")),
    )
    assert_ranked(
        fewer.search(q, 30), _brute_force(after, "alice", q, 30, gone=frozenset({pts[12].id}))
    )
    assert len(fewer) == len(pts) - 1 and fewer.without(["not-there"]) is fewer


def test_the_last_write_of_an_id_in_one_batch_wins():
    p = _alice()[0]
    later = p.__class__(**{**p.__dict__, "vector": [1.0] + [0.0] * (DIM - 1)})
    snap = UserVectors.build([], DIM).with_rows(_rows([p, later]))
    assert len(snap) == 1
    assert snap.search([1.0] + [0.0] * (DIM - 1), 1)[0][1] == pytest.approx(1.0)


def _user(n, tag):
    rng = np.random.default_rng(n)
    return [
        (str(uuid.uuid4()), rng.normal(size=DIM), f"{tag}-s", T0.timestamp(), "") for _ in range(n)
    ]


def test_cache_keeps_the_most_recently_searched_users_within_its_budget():
    cache = UserVectorCache(max_points=25)
    for user, n in (("a", 10), ("b", 10)):
        cache.put(user, UserVectors.build(_user(n, user), DIM))
    cache.get("a").search(np.ones(DIM), 1)  # a is now more recent than b
    cache.put("c", UserVectors.build(_user(10, "c"), DIM))
    assert "b" not in cache and {"a", "c"} <= set(cache._users)
    assert cache.points == 20
    # A write that grows a cached user past the budget evicts the others first.
    cache.apply({"c": _user(10, "c")})
    assert "a" not in cache and cache.points == 20
    assert not cache.fits("huge", 26) and not cache.wanted("huge")
    assert not cache.fits("new", 0) and not cache.wanted("new")  # nothing stored yet
    cache.apply({"huge": _user(1, "huge"), "new": _user(1, "new")})  # tried again after a write
    assert cache.wanted("huge") and cache.wanted("new")
    assert not UserVectorCache(0).wanted("a")


def test_an_id_written_for_another_user_leaves_the_first_users_snapshot():
    cache = UserVectorCache(max_points=100)
    rows = _user(5, "a")
    cache.put("a", UserVectors.build(rows, DIM))
    cache.put("b", UserVectors.build(_user(3, "b"), DIM))
    cache.apply({"b": [rows[0]]})
    assert rows[0][0] not in cache.get("a").pos and rows[0][0] in cache.get("b").pos
    cache.delete("b", [rows[0][0]])
    assert len(cache.get("b")) == 3
    cache.drop("a")
    assert "a" not in cache
    cache.clear()
    assert cache.points == 0


def test_time_filters_use_the_stored_epoch_seconds():
    pts = _alice()
    snap = UserVectors.build(_rows(pts), DIM)
    f = VectorFilters(time_from=T0 + timedelta(days=10), time_to=T0 + timedelta(days=10))
    got = snap.search(np.ones(DIM), 10, f)
    assert [i for i, _ in got] == [p.id for p in pts if p.ts == T0 + timedelta(days=10)]


def test_one_write_that_replaces_and_adds_keeps_both():
    pts = _alice()
    snap = UserVectors.build(_rows(pts[:20]), DIM)
    q = np.asarray(pts[25].vector)
    changed = pts[2].__class__(**{**pts[2].__dict__, "vector": list(-q)})
    both = snap.with_rows(_rows([changed] + pts[20:]))
    after = [changed if p.id == changed.id else p for p in pts]
    assert_ranked(both.search(q, 30), _brute_force(after, "alice", q, 30))
    assert_ranked(both.search(-q, 3), _brute_force(after, "alice", -q, 3))
