"""Users' vectors as numpy matrices: the embedded store's search path for users it holds.

Qdrant Edge holds the GIL for the whole of a query (`python -m benchmarks.edge_gil`), and on the
MemoryIndex replica that is the event loop's GIL: at 8 concurrent searches over 10,000 vectors
it was the largest single share of the time the GIL was held. Scoring a user's vectors with one
matrix-vector product (BLAS releases the GIL) answers the same exact cosine search in a third
of the time. EdgeVectorStore keeps these snapshots in step with every write it makes, so they
never disagree with the shard (tests/unit/storage/test_vectors_congruence.py runs both).

A snapshot is never changed once published: searches read one without a lock while the writer
(the store, under its write lock) publishes the next.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from serve_app.storage.vectors import VectorFilters

# Payload fields kept beside the rows, so filtered searches are answered here too.
Row = tuple[str, Sequence[float], str, float, str]  # id, vector, session_id, ts, speaker

_use = itertools.count()  # recency, for eviction
_ENGINE_ONLY_MAX = 100_000


def _positions(ids: list[str]) -> dict[str, int]:
    return {i: k for k, i in enumerate(ids)}


def unit_rows(vectors: Sequence[Sequence[float]] | np.ndarray, dim: int) -> np.ndarray:
    """float32 rows scaled to unit length (a zero vector stays zero), as the Cosine distance
    stores them."""
    m = np.asarray(vectors, dtype=np.float32).reshape(-1, dim)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)


@dataclass(eq=False)
class UserVectors:
    """One user's points: ids, unit rows and the payload fields filters match. The matrix may
    be a view of a larger buffer whose spare rows later snapshots fill (appends are amortised);
    rows this snapshot shows are never written again."""

    ids: list[str]
    pos: dict[str, int]
    matrix: np.ndarray  # (n, dim), unit rows
    session: np.ndarray  # (n,) object
    ts: np.ndarray  # (n,) float64, epoch seconds
    speaker: np.ndarray  # (n,) object, lower-cased
    _buffer: np.ndarray | None = field(default=None, repr=False)
    used: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, rows: Iterable[Row], dim: int) -> UserVectors:
        rows = list(rows)
        ids = [r[0] for r in rows]
        return cls(
            ids=ids,
            pos=_positions(ids),
            matrix=unit_rows([r[1] for r in rows], dim),
            session=np.array([r[2] for r in rows], dtype=object),
            ts=np.array([r[3] for r in rows], dtype=np.float64),
            speaker=np.array([r[4] for r in rows], dtype=object),
        )

    @classmethod
    def concat(cls, parts: Sequence[UserVectors], dim: int) -> UserVectors:
        if not parts:
            return cls.build([], dim)
        ids = [i for p in parts for i in p.ids]
        return cls(
            ids=ids,
            pos=_positions(ids),
            matrix=np.concatenate([p.matrix for p in parts]),
            session=np.concatenate([p.session for p in parts]),
            ts=np.concatenate([p.ts for p in parts]),
            speaker=np.concatenate([p.speaker for p in parts]),
        )

    def search(
        self, vector: Sequence[float], limit: int, filters: VectorFilters | None = None
    ) -> list[tuple[str, float]]:
        """The `limit` ids with the highest cosine similarity, best first (ties: oldest row)."""
        self.used = next(_use)
        n = len(self.ids)
        if n == 0 or limit <= 0:
            return []
        q = unit_rows(vector, self.matrix.shape[1])[0]
        scores = self.matrix @ q
        candidates = None
        if filters is not None and not filters.is_empty():
            exact, (lo, hi) = filters.payload_conditions()
            mask = np.ones(n, dtype=bool)
            if "session_id" in exact:
                mask &= self.session == exact["session_id"]
            if "speaker" in exact:
                mask &= self.speaker == exact["speaker"]
            if lo is not None:
                mask &= self.ts >= lo
            if hi is not None:
                mask &= self.ts <= hi
            candidates = np.flatnonzero(mask)
            scores = scores[candidates]
        k = min(limit, scores.size)
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < scores.size else np.arange(scores.size)
        top = top[np.lexsort((top, -scores[top]))]
        rows = top if candidates is None else candidates[top]
        ids = self.ids
        return list(zip([ids[r] for r in rows.tolist()], scores[top].tolist(), strict=True))

    def with_rows(self, rows: Sequence[Row]) -> UserVectors:
        """This user's points with `rows` inserted or replaced."""
        dim = self.matrix.shape[1]
        latest = {r[0]: r for r in rows}  # the last write of an id wins, as in the shard
        if not latest:
            return self
        replaced = [r for i, r in latest.items() if i in self.pos]
        added = [r for i, r in latest.items() if i not in self.pos]
        n, k = len(self.ids), len(added)
        matrix, buffer = self.matrix, self._buffer
        session, ts, speaker = self.session, self.ts, self.speaker
        if replaced:
            # Copied: a search may be reading the rows being replaced.
            matrix = buffer = matrix.copy()
            session, ts, speaker = session.copy(), ts.copy(), speaker.copy()
            at = [self.pos[r[0]] for r in replaced]
            matrix[at] = unit_rows([r[1] for r in replaced], dim)
            session[at] = [r[2] for r in replaced]
            ts[at] = [r[3] for r in replaced]
            speaker[at] = [r[4] for r in replaced]
        if k == 0:
            return UserVectors(self.ids, self.pos, matrix, session, ts, speaker, buffer, self.used)
        if buffer is None or buffer.shape[0] < n + k:
            # Room to grow by half again: a user ingesting steadily copies the matrix
            # O(log n) times, not once per write.
            buffer = np.empty((max(n + k, n + n // 2, 64), dim), dtype=np.float32)
            buffer[:n] = matrix
        buffer[n : n + k] = unit_rows([r[1] for r in added], dim)
        ids = self.ids + [r[0] for r in added]
        pos = dict(self.pos)
        pos.update((r[0], n + j) for j, r in enumerate(added))
        return UserVectors(
            ids,
            pos,
            buffer[: n + k],
            np.concatenate([session, np.array([r[2] for r in added], dtype=object)]),
            np.concatenate([ts, np.array([r[3] for r in added], dtype=np.float64)]),
            np.concatenate([speaker, np.array([r[4] for r in added], dtype=object)]),
            buffer,
            self.used,
        )

    def without(self, ids: Iterable[str]) -> UserVectors:
        """This user's points less `ids` (ids it does not hold are ignored)."""
        gone = sorted({self.pos[i] for i in ids if i in self.pos})
        if not gone:
            return self
        keep = np.setdiff1d(np.arange(len(self.ids)), gone)
        kept_ids = [self.ids[k] for k in keep.tolist()]
        return UserVectors(
            kept_ids,
            _positions(kept_ids),
            self.matrix[keep],
            self.session[keep],
            self.ts[keep],
            self.speaker[keep],
            used=self.used,
        )


class UserVectorCache:
    """The snapshots of the users searched lately, at most `max_points` rows in all (least
    recently searched users go first). Every method that changes it must be called under the
    owning store's write lock; `get` needs none."""

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self._users: dict[str, UserVectors] = {}
        # Users the engine answers until a write touches them: none of their points is stored,
        # or more than the whole budget. Bounded: forgetting them only costs one more count.
        self._engine_only: set[str] = set()

    def get(self, user_id: str) -> UserVectors | None:
        return self._users.get(user_id)

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._users

    @property
    def points(self) -> int:
        return sum(len(u) for u in self._users.values())

    def fits(self, user_id: str, points: int) -> bool:
        """Whether a snapshot of `points` points is kept; if not, the engine answers the user
        until a write touches them."""
        if 0 < points <= self.max_points:
            return True
        if len(self._engine_only) >= _ENGINE_ONLY_MAX:
            self._engine_only.clear()
        self._engine_only.add(user_id)
        return False

    def wanted(self, user_id: str) -> bool:
        """Whether a search of this user should load its snapshot."""
        return self.max_points > 0 and user_id not in self._engine_only

    def put(self, user_id: str, vectors: UserVectors) -> None:
        vectors.used = next(_use)
        self._users[user_id] = vectors
        self._evict(keep=user_id)

    def apply(self, rows_by_user: dict[str, list[Row]]) -> None:
        """Points written to the shard: inserted or replaced in their users' snapshots, and
        taken out of any other user's (an id belongs to one user)."""
        written = {r[0]: u for u, rs in rows_by_user.items() for r in rs}
        for user_id in rows_by_user:
            self._engine_only.discard(user_id)
        for user_id, cached in list(self._users.items()):
            updated = cached
            # Costs the smaller of the two sizes per cached user (a set is iterated when it
            # is the smaller), so a large write does not scan every cached user's points.
            if not cached.pos.keys().isdisjoint(written.keys()):
                updated = updated.without(
                    i for i in cached.pos if written.get(i, user_id) != user_id
                )
            if user_id in rows_by_user:
                updated = updated.with_rows(rows_by_user[user_id])
            if updated is not cached:
                self._users[user_id] = updated
        self._evict()

    def delete(self, user_id: str, ids: Sequence[str]) -> None:
        cached = self._users.get(user_id)
        if cached is not None:
            self._users[user_id] = cached.without(ids)

    def drop(self, user_id: str) -> None:
        self._users.pop(user_id, None)
        self._engine_only.discard(user_id)

    def clear(self) -> None:
        self._users.clear()
        self._engine_only.clear()

    def _evict(self, keep: str | None = None) -> None:
        total = self.points
        for user_id, cached in sorted(self._users.items(), key=lambda kv: kv[1].used):
            if total <= self.max_points:
                return
            if user_id != keep:
                del self._users[user_id]
                total -= len(cached)
