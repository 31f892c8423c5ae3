"""`python -m serve_app.ops.backup DEST`: an online, consistent backup of a service's data.

PostgreSQL, the system of record, is dumped with `pg_dump` (one snapshot: every row of one
instant, while the service keeps running and writing). Vectors are not copied: they are derived
data (each entry's `index_text` embedded by the generation's model), and `restore` derives them
again from the dumped entries. That makes them consistent with PostgreSQL by construction (a
vector exists exactly for each dumped entry), works the same for every vector store, and needs
no access to the embedded store, which the running memory index holds open in its own process.
The price is embedding time at restore.

Honours MEMSERVE_DATA_DIR (the embedded PostgreSQL under it), MEMSERVE_PG_DSN (an external
server instead) and MEMSERVE_QDRANT_URL (nothing of it is read: vectors are re-derived).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from serve_app.ops import pg_tools
from serve_app.settings import Settings
from serve_app.storage import backup_repo

FORMAT = "memserve.backup"
VERSION = 1
MANIFEST = "manifest.json"
DUMP = "postgres.dump"


async def _describe(dsn: str) -> tuple[int, dict]:
    conn = await asyncpg.connect(dsn)
    try:
        return await backup_repo.server_major(conn), await backup_repo.summary(conn)
    finally:
        await conn.close()


def backup(settings: Settings, dest: Path) -> dict:
    """Write a backup into `dest` (a new or empty directory); returns its manifest."""
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"backup: {dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    with pg_tools.database(settings) as dsn:
        major, seen = asyncio.run(_describe(dsn))
        started = datetime.now(UTC)
        pg_tools.run(
            [
                pg_tools.tool("pg_dump", major),
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--file={dest / DUMP}",
                f"--dbname={dsn}",
            ]
        )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "started_at": started.isoformat(),
        "postgres": {"file": DUMP, "server_major": major},
        "vectors": "derived from the dumped entries at restore",
        "embedding_model": settings.embedding_model,
        # counted just before the dump's snapshot: a running service may have added since
        "seen_before_dump": {k: seen[k] for k in ("users", "messages", "memories")},
        "generations": seen["generations"],
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def main(argv: list[str] | None = None) -> int:
    """The command line (also what `memserve backup DEST` runs)."""
    parser = argparse.ArgumentParser(prog="python -m serve_app.ops.backup", description=__doc__)
    parser.add_argument("dest", type=Path, help="a new or empty directory")
    args = parser.parse_args(argv)
    manifest = backup(Settings(), args.dest)
    print(json.dumps(manifest, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
