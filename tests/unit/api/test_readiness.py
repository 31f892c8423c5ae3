import asyncio

from serve_app.api.readiness import check, report


async def test_check_reports_failures_and_timeouts_as_not_ok():
    async def ok():
        return {"version": "15"}

    async def broken():
        raise ConnectionError("refused")

    async def slow():
        await asyncio.sleep(1)

    assert await check("pg", ok()) == ("pg", {"ok": True, "version": "15"})
    assert await check("pg", broken()) == ("pg", {"ok": False, "error": "ConnectionError: refused"})
    name, out = await check("pg", slow(), timeout_s=0.01)
    assert (name, out["ok"]) == ("pg", False) and out["error"].startswith("TimeoutError")


def test_report_derives_qdrant_and_compressor_and_needs_every_check():
    checks = {
        "postgresql": {"ok": True},
        "memory_index": {"ok": True, "qdrant": "embedded"},
        "embedder": {"ok": True},
        "ingest_worker": {"ok": True, "compression": {"ok": True, "rate": 0.5}},
    }
    status, body = report(checks)
    assert status == 200 and body["status"] == "ready"
    assert body["checks"]["qdrant"] == {"ok": True, "mode": "embedded"}
    assert body["checks"]["compressor"] == {"ok": True, "rate": 0.5}
    assert "compression" not in body["checks"]["ingest_worker"]

    status, body = report({**checks, "ingest_worker": {"ok": False, "error": "x"}})
    assert status == 503 and body["status"] == "not_ready"
    assert body["checks"]["compressor"] == {"ok": False, "error": "ingest worker did not answer"}
