"""`python -m serve_app.ops.restore SRC`: fill an empty data directory (or an empty external
database) from a backup of serve_app.ops.backup.

PostgreSQL is restored with `pg_restore` in one transaction. Then every live index generation
of the configured embedding model gets its vectors again, embedded from the restored entries'
`index_text` with that model (the vectors the service wrote were made the same way, so the same
searches find the same ids with the same scores); a generation of another model is marked as
holding nothing, and the memory index's catch-up sweep fills it once the service runs.

If a restore stops half-way, remove what it wrote and run it again: it only fills empty places.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg

from serve_app.ops import pg_tools
from serve_app.ops.backup import DUMP, FORMAT, MANIFEST, VERSION
from serve_app.settings import Settings
from serve_app.storage import backup_repo, generations_repo
from serve_app.storage.vector_stores import open_vector_store
from serve_app.storage.vectors import VectorPoint

Encode = Callable[[Sequence[str]], Sequence[Sequence[float]]]


def _read_manifest(src: Path) -> dict:
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"restore: {src} is not a backup ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise SystemExit(f"restore: {src / MANIFEST} is not a {FORMAT} v{VERSION} manifest")
    return manifest


def _has_files(path: Path) -> bool:
    return path.exists() and any(path.iterdir())


def _check_empty_places(settings: Settings) -> None:
    if settings.pg_dsn is None and _has_files(settings.pg_data_dir):
        raise SystemExit(f"restore: {settings.pg_data_dir} holds a database already")
    if settings.qdrant_url is None:
        for path in (settings.edge_path, settings.qdrant_path):
            if _has_files(path):
                raise SystemExit(f"restore: {path} holds vectors already")


async def _check_empty_database(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        if not await backup_repo.is_empty(conn):
            raise SystemExit("restore: the database named by MEMSERVE_PG_DSN is not empty")
        return await backup_repo.server_major(conn)
    finally:
        await conn.close()


async def _derive_vectors(
    settings: Settings, dsn: str, encode: Encode | None, batch: int
) -> dict[int, int]:
    """Embed every live generation of the configured model again; returns vectors written per
    generation (-1: left to the service's catch-up sweep)."""
    conn = await asyncpg.connect(dsn)
    try:
        gens = await generations_repo.live(conn)
        model = settings.embedding_model
        served = [g for g in gens if g["embedding_model"] == model]
        written: dict[int, int] = {}
        for g in gens:
            if g["embedding_model"] != model:
                await backup_repo.forget_members(conn, g["generation"])
                written[g["generation"]] = -1
        if not served:
            return written
        if encode is None:
            from serve_app.encoding.torch_encoder import Embedder

            encode = Embedder(model).encode
        base = open_vector_store(settings, served[0]["dim"])
        try:
            for g in served:
                store = (
                    base
                    if g["collection"] == base.base
                    else base.with_base(g["collection"], g["dim"])
                )
                n = 0
                async for rows in backup_repo.entries_of_version(conn, g["memory_version"], batch):
                    vectors = await asyncio.to_thread(encode, [r["index_text"] for r in rows])
                    await store.upsert(
                        [
                            VectorPoint(
                                r["id"], v, r["user_id"], r["session_id"], r["ts"], r["speaker"]
                            )
                            for r, v in zip(rows, vectors, strict=True)
                        ]
                    )
                    n += len(rows)
                written[g["generation"]] = n
        finally:
            await base.close()
        return written
    finally:
        await conn.close()


async def _summary(dsn: str) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        return await backup_repo.summary(conn)
    finally:
        await conn.close()


def restore(settings: Settings, src: Path, encode: Encode | None = None, batch: int = 256) -> dict:
    """Restore `src` into the (empty) places `settings` name; returns what was restored.
    `encode` embeds texts with the configured model (default: that model loaded here)."""
    manifest = _read_manifest(src)
    _check_empty_places(settings)
    with pg_tools.database(settings) as dsn:
        major = asyncio.run(_check_empty_database(dsn))
        pg_tools.run(
            [
                pg_tools.tool("pg_restore", major),
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                f"--dbname={dsn}",
                str(src / DUMP),
            ]
        )
        vectors = asyncio.run(_derive_vectors(settings, dsn, encode, batch))
        restored = asyncio.run(_summary(dsn))
    return {
        "from": str(src),
        "backup_started_at": manifest["started_at"],
        "users": restored["users"],
        "messages": restored["messages"],
        "memories": restored["memories"],
        "vectors_per_generation": vectors,
    }


def main(argv: list[str] | None = None) -> int:
    """The command line (also what `memserve restore SRC` runs)."""
    parser = argparse.ArgumentParser(prog="python -m serve_app.ops.restore", description=__doc__)
    parser.add_argument("src", type=Path, help="a directory written by serve_app.ops.backup")
    args = parser.parse_args(argv)
    print(json.dumps(restore(Settings(), args.src), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
