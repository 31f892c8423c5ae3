"""Vector index in process: Qdrant Edge (Qdrant's own engine as a library, `qdrant-edge-py`).

The embedded default. qdrant-client's local mode scans a numpy matrix in Python and evaluates
payload filters point by point (10k points: 18 ms per search, 88 ms with a user filter); Qdrant
Edge runs the server's segment code in Rust: one shard per index generation, the user id as an
indexed keyword, 0.5-0.6 ms per filtered search at 10k x 384 measured here. It answers the same
calls as `QdrantVectorStore` (tests/unit/storage/test_vectors_congruence.py runs them side by
side). One process owns a shard directory, like local mode: the MemoryIndex replica.

Engine calls are synchronous Rust; writes run in a worker thread so the replica's event loop
keeps serving while a large batch is indexed. Searches are answered from the user's vectors as
a numpy matrix (serve_app/storage/user_vectors.py), loaded on the user's first search and kept
in step with every write here.

Edge runs no optimizer of its own: a deleted or replaced point stays in its segment, in memory
and on disk, until `optimize()` vacuums it. Measured here, 10 rounds of 5,000 points added and
erased: 143 -> 231 MB resident and 156 -> 254 MB on disk without it; 152-184 MB and 124-156 MB
with `compact()` after each round (~0.07 s each). The memory index compacts changed shards
periodically (serve_app/retrieval/generations.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from serve_app.settings import Settings
from serve_app.storage.user_vectors import Row, UserVectorCache, UserVectors
from serve_app.storage.vectors import VectorFilters, VectorPoint, payload

log = logging.getLogger(__name__)

_META = "memserve-vectors.json"  # the dimension, checked before a shard is opened
DEFAULT_CACHE_POINTS: int = Settings.model_fields["vector_cache_points"].default
_LOAD_CHUNK = 512  # points per scroll page when a user's matrix is loaded
_FIELDS = (
    ("user_id", "Keyword"),
    ("session_id", "Keyword"),
    ("speaker", "Keyword"),
    ("ts", "Float"),
)


class EdgeVectorStore:
    layout = "edge"

    def __init__(
        self, root: str | Path, base: str, dim: int, cache_points: int = DEFAULT_CACHE_POINTS
    ) -> None:
        import qdrant_edge as qe

        self._qe = qe
        self.root = Path(root)
        self.base = base
        self.dim = dim
        self._path = self.root / base
        self._shard = None
        # Writers, opening and closing go one at a time (one lock per store); searches read
        # the open shard directly.
        self._lock = threading.Lock()
        self._changed = False  # points written or deleted since the last compact()
        self._closed = False  # close() was called and nothing opened the shard since
        self.cache = UserVectorCache(cache_points)
        self._loading: dict[str, asyncio.Task] = {}
        self.searches: Counter[str] = Counter()  # by what answered: "matrix" or "engine"

    @classmethod
    def open(
        cls, *, path: str, base: str, dim: int, cache_points: int = DEFAULT_CACHE_POINTS
    ) -> EdgeVectorStore:
        return cls(path, base, dim, cache_points)

    def _config(self):
        qe = self._qe
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=self.dim, distance=qe.Distance.Cosine),
            max_search_threads=1,
            # Vacuum only: at the default threshold `optimize()` builds an HNSW graph once a
            # segment passes ~10 MB of vectors (15.9 s for 20k x 384 here), which makes search
            # approximate. Searches stay exact, as they have always been measured.
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=0),
        )

    def _open_shard(self, create: bool):
        if self._shard is not None:
            return self._shard
        qe = self._qe
        meta = self._path / _META
        if meta.exists():
            size = json.loads(meta.read_text())["dim"]
            if size != self.dim:
                raise RuntimeError(
                    f"vector shard {self.base!r} holds {size}-d vectors but the embedder makes "
                    f"{self.dim}-d ones; rebuild the index for the new model"
                )
            shard = qe.EdgeShard.load(str(self._path), self._config())
        elif create:
            # A directory without the marker is a creation that died half-way: start it again.
            shutil.rmtree(self._path, ignore_errors=True)
            self._path.mkdir(parents=True)
            shard = qe.EdgeShard.create(str(self._path), self._config())
            for field, kind in _FIELDS:
                shard.update(
                    qe.UpdateOperation.create_field_index(
                        field, getattr(qe.PayloadSchemaType, kind)
                    )
                )
            shard.flush()
            # Written last: a shard directory without it was never completely created.
            meta.write_text(json.dumps({"dim": self.dim}))
        else:
            return None
        self._shard = shard
        self._closed = False
        return shard

    def _filter(self, user_id: str, filters: VectorFilters | None):
        qe = self._qe
        must = [qe.FieldCondition(key="user_id", match=qe.MatchValue(user_id))]
        if filters is not None:
            exact, (lo, hi) = filters.payload_conditions()
            for key, value in exact.items():
                must.append(qe.FieldCondition(key=key, match=qe.MatchValue(value)))
            if lo is not None or hi is not None:
                must.append(qe.FieldCondition(key="ts", range=qe.RangeFloat(gte=lo, lte=hi)))
        return qe.Filter(must=must)

    def _run(self, fn, *args):
        def locked():
            with self._lock:
                return fn(*args)

        return asyncio.to_thread(locked)

    async def check(self) -> None:
        """Raise if the shard directory cannot be opened."""
        await self._run(self._open_shard, False)

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        if not points:
            return
        qe = self._qe
        payloads = [payload(p) for p in points]
        structs = [
            qe.Point(p.id, list(map(float, p.vector)), pl)
            for p, pl in zip(points, payloads, strict=True)
        ]

        def write():
            shard = self._open_shard(True)
            shard.update(qe.UpdateOperation.upsert_points(structs))
            shard.flush()
            self._changed = True
            rows: dict[str, list[Row]] = {}
            for p, pl in zip(points, payloads, strict=True):
                rows.setdefault(p.user_id, []).append(_row(p.id, p.vector, pl))
            self.cache.apply(rows)

        await self._run(write)

    async def search(self, user_id: str, vector: Sequence[float], limit: int, filters=None):
        """QdrantVectorStore.search, on the caller's event loop: from the user's matrix (its
        product runs in BLAS, without the GIL), loaded first if it is not (once per user and
        process, like the user's BM25 index; concurrent searches share the load), so a user's
        searches are always answered the same way and repeat exactly; by the engine when the
        matrices are off or the user is larger than their budget. qdrant-edge holds the GIL
        for the whole query (`python -m benchmarks.edge_gil`: a Python thread beside
        back-to-back searches runs at half speed), so a worker thread would block the loop just
        the same and add two thread hand-offs: 7 ms of waiting per search at 8 concurrent
        clients against 1.1 ms inline (10k points, 0.6 ms alone). Reads take no lock: the
        shard serialises its own segments, snapshots are replaced whole, and a search waits for
        a writer only while the user's matrix is first loaded."""
        cached = self.cache.get(user_id)
        if cached is None and self.cache.wanted(user_id):
            cached = await self._loaded(user_id)
        if cached is not None:
            self.searches["matrix"] += 1
            return cached.search(vector, limit, filters)
        self.searches["engine"] += 1
        return self._engine_search(user_id, vector, limit, filters)

    def _engine_search(self, user_id: str, vector: Sequence[float], limit: int, filters=None):
        qe = self._qe
        shard = self._shard
        if shard is None:
            with self._lock:
                shard = self._open_shard(False)
            if shard is None:
                return []
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(list(map(float, vector))),
            filter=self._filter(user_id, filters),
            with_payload=False,
        )
        return [(str(p.id), float(p.score)) for p in shard.query(request)]

    def matrix_stats(self) -> dict:
        """What /readyz shows of the users' matrices: how many users and points are loaded,
        and how many searches each path answered."""
        return {
            "users": len(self.cache),
            "points": self.cache.points,
            "budget_points": self.cache.max_points,
            "searches": dict(self.searches),
        }

    async def warm(self, user_id: str) -> bool:
        """Load the user's matrix now (if the budget allows); True when searches use it."""
        return user_id in self.cache or await self._loaded(user_id) is not None

    async def _loaded(self, user_id: str) -> UserVectors | None:
        task = self._loading.get(user_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(user_id))
            self._loading[user_id] = task
            task.add_done_callback(lambda _: self._loading.pop(user_id, None))
        # Shielded: a search whose client went away must not cancel the load others wait on.
        await asyncio.shield(task)
        return self.cache.get(user_id)

    async def _load(self, user_id: str) -> None:
        try:
            await self._run(self._read_user, user_id)
        except Exception:  # the engine answers this user's searches instead
            log.exception("loading the vectors of user %s into memory failed", user_id)

    def _read_user(self, user_id: str) -> None:
        # Under the write lock: no write lands between the pages, and the snapshot is
        # published before the next writer updates it.
        qe = self._qe
        if self._closed or user_id in self.cache or not self.cache.wanted(user_id):
            return  # a store closed meanwhile is not opened again by a load
        shard = self._open_shard(False)
        if shard is None:
            return
        who = self._filter(user_id, None)
        # A user with no points is left to the engine (empty snapshots would never be evicted).
        if not self.cache.fits(user_id, shard.count(qe.CountRequest(filter=who, exact=True))):
            return
        pages: list[UserVectors] = []
        offset = None
        while True:
            page, offset = shard.scroll(
                qe.ScrollRequest(
                    offset=offset,
                    limit=_LOAD_CHUNK,
                    filter=who,
                    with_payload=True,
                    with_vector=True,
                )
            )
            # Converted page by page: the GIL is let go between pages, so the event loop
            # goes on serving while a large user loads.
            rows = [_row(str(r.id), _dense(r.vector), r.payload) for r in page]
            pages.append(UserVectors.build(rows, self.dim))
            if offset is None:
                break
        self.cache.put(user_id, UserVectors.concat(pages, self.dim))

    async def delete(self, user_id: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        qe = self._qe

        def remove():
            shard = self._open_shard(False)
            if shard is None:
                return
            # Only this user's points: an id of another user's memory is left alone.
            keep_user = qe.Filter(
                must=[
                    qe.HasIdCondition(set(ids)),
                    qe.FieldCondition(key="user_id", match=qe.MatchValue(user_id)),
                ]
            )
            shard.update(qe.UpdateOperation.delete_points_by_filter(keep_user))
            shard.flush()
            self._changed = True
            self.cache.delete(user_id, ids)

        await self._run(remove)

    async def delete_user(self, user_id: str) -> None:
        qe = self._qe

        def remove():
            shard = self._open_shard(False)
            if shard is None:
                return
            shard.update(qe.UpdateOperation.delete_points_by_filter(self._filter(user_id, None)))
            shard.flush()
            self._changed = True
            self.cache.drop(user_id)

        await self._run(remove)

    async def compact(self) -> bool:
        """Vacuum deleted and replaced points out of the shard, if any point changed since the
        last call; True when it ran."""

        def vacuum() -> bool:
            if not self._changed or self._shard is None:
                return False
            self._changed = False
            self._shard.optimize()
            self._shard.flush()
            return True

        return await self._run(vacuum)

    async def count(self, user_id: str) -> int:
        qe = self._qe

        def count():
            shard = self._open_shard(False)
            if shard is None:
                return 0
            return shard.count(qe.CountRequest(filter=self._filter(user_id, None), exact=True))

        return await self._run(count)

    def with_base(self, base: str, dim: int) -> EdgeVectorStore:
        """Another shard beside this one (an index generation)."""
        return EdgeVectorStore(self.root, base, dim, self.cache.max_points)

    async def retrieve_vectors(self, user_id: str, ids: Sequence[str]) -> dict[str, list[float]]:
        if not ids:
            return {}

        def read():
            shard = self._open_shard(False)
            if shard is None:
                return {}
            records = shard.retrieve(list(ids), with_payload=True, with_vector=True)
            return {
                str(r.id): list(_dense(r.vector))
                for r in records
                if (r.payload or {}).get("user_id") == user_id
            }

        return await self._run(read)

    async def drop_all(self) -> int:
        """Delete this base's shard (every user's points); returns how many shards went."""

        def drop():
            self.cache.clear()
            if self._shard is not None:
                self._shard.close()
                self._shard = None
            if not self._path.exists():
                return 0
            shutil.rmtree(self._path)
            return 1

        return await self._run(drop)

    async def close(self) -> None:
        def close():
            self.cache.clear()
            self._closed = True
            if self._shard is not None:
                self._shard.flush()
                self._shard.close()
                self._shard = None

        await self._run(close)


def _row(point_id: str, vector: Sequence[float], pl: dict) -> Row:
    """A point as the users' matrices hold it (`pl`: its payload, as `payload()` makes it)."""
    return (point_id, vector, pl["session_id"], pl["ts"], pl["speaker"])


def _dense(vector) -> Sequence[float]:
    # Records carry {name: vector}; the unnamed dense vector is "".
    if isinstance(vector, dict):
        return vector.get("", next(iter(vector.values())))
    return vector
