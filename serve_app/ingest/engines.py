"""The engines the ingestion pipeline calls, as async callables (no Ray in the core: the
Serve shell passes handle calls, the tests pass doubles), and the one way entries are written."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from serve_app.model.entries import EntryRow
from serve_app.pipeline.intake import Attend, Compress, Embed
from serve_app.storage.postgres import Repository
from serve_app.storage.vectors import VectorPoint

# (points, memory version): index entries of that memory version.
Index = Callable[[list[VectorPoint], int], Awaitable[None]]

__all__ = ["Attend", "Compress", "Embed", "Engines", "Index"]


@dataclass(frozen=True)
class Engines:
    embed: Embed
    index: Index
    compress: Compress | None = None  # None: compression off
    attend: Attend | None = None  # the compressor's attention for the cut; None: vectors only

    async def write_entries(
        self,
        conn: asyncpg.Connection,
        rows: Sequence[EntryRow],
        version: int,
        known: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        """Embed `rows` once, index them into memory version `version`, then insert them and
        bump their users' index versions in the caller's transaction (a crash before its commit
        leaves vector points that the retry overwrites: entry ids are deterministic).

        `known`: index text -> vector already computed by the same embedder (the cut's);
        only the other index texts are embedded, in one call."""
        if not rows:
            return
        vectors = dict(known or {})
        missing = [t for t in dict.fromkeys(r.index_text for r in rows) if t not in vectors]
        if missing:
            vectors.update(zip(missing, await self.embed(missing), strict=True))
        await self.index([VectorPoint.for_entry(r, vectors[r.index_text]) for r in rows], version)
        await Repository.insert_entries(conn, rows)
        await Repository.bump_index_revision(conn, [r.user_id for r in rows])
