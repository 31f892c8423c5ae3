"""GET /readyz: every dependency checked with a deadline, answered as one report."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def check(name: str, call: Awaitable, timeout_s: float = 5) -> tuple[str, dict]:
    """(name, {ok, ...details}) of one dependency; a failure or timeout is ok=False."""
    try:
        detail = await asyncio.wait_for(call, timeout=timeout_s)
        return name, {"ok": True, **(detail or {})}
    except Exception as e:
        return name, {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}


def compression_without_compressor(status: dict) -> dict:
    """The compressor check when no Compressor group runs (`status` as the builder's
    `compression_status`): ready, unless the profile expects compression."""
    if status.get("required"):
        problem = f"profile expects compression, which is off: {status.get('reason')}"
        return {**status, "ok": False, "error": problem}
    return {**status, "ok": True}


def report(checks: dict[str, dict]) -> tuple[int, dict]:
    """(HTTP status, body) from the checks of postgresql, memory_index, embedder and
    ingest_worker; the vector store and the compressor come through the memory index and the
    worker."""
    checks = dict(checks)
    # The memory index answers for its vector store.
    checks["qdrant"] = {
        "ok": checks["memory_index"]["ok"],
        "mode": checks["memory_index"].get("qdrant"),
    }
    worker = checks["ingest_worker"]
    checks["compressor"] = worker.pop(
        "compression", {"ok": False, "error": "ingest worker did not answer"}
    )
    ok = all(c["ok"] for c in checks.values())
    return 200 if ok else 503, {"status": "ready" if ok else "not_ready", "checks": checks}
