"""GET /healthz (the process answers) and GET /readyz (every dependency answers)."""

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serve_app.api import readiness
from serve_app.api.errors import RETRY_AFTER_S
from serve_app.api.services import Svc
from serve_app.storage import health

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(svc: Svc) -> JSONResponse:
    async def pg() -> dict:
        return await health.server_version((await svc.repo()).pool)

    checks = await asyncio.gather(
        readiness.check("postgresql", pg()),
        readiness.check("memory_index", svc.memory_index.ready.remote()),
        readiness.check("embedder", svc.embedder.info.remote()),
        readiness.check("ingest_worker", svc.worker.ready.remote()),
    )
    status, body = readiness.report(dict(checks))
    # Not ready is an outage that passes (a store restarting, a replica replaced).
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse(status_code=status, content=body, headers=headers)
