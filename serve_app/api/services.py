"""What the routes work with, declared once: the settings, the PostgreSQL repository (pool
opened on first use) and the handles of the other replica groups. Each replica that answers
HTTP (Ingress; MemoryIndex for search) builds one Services and installs it; routes take it
through the `Svc` dependency (tests override it)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends

from serve_app.api.errors import ApiError
from serve_app.maintenance.orchestration import JobOrchestrator
from serve_app.security.authenticator import Authenticator
from serve_app.security.rate_limit import RateLimiter
from serve_app.settings import Settings
from serve_app.storage import audit_repo, keys_repo
from serve_app.storage.postgres import Repository, create_pool

logger = logging.getLogger("ray.serve")


@dataclass
class Services:
    settings: Settings
    # Replica handles: `handle.method.remote(...)` gives something to await (duck-typed so the
    # routes stay free of Ray and testable with plain fakes).
    memory_index: Any
    worker: Any
    embedder: Any
    jobs: JobOrchestrator | None = None
    admin_key: str | None = field(default=None, repr=False)
    # Ingress replicas sharing the rate limits (each enforces its share of a key's limit).
    replicas: int = 1
    auth: Authenticator | None = None  # built on first use from admin_key and the keys table
    limiter: RateLimiter | None = None
    _pool: Any = field(default=None, repr=False)
    _pruner: asyncio.Task | None = field(default=None, repr=False)
    _pool_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def repo(self) -> Repository:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    s = self.settings
                    self._pool = await create_pool(s.pg_dsn, s.pg_pool_min, s.pg_pool_max)
                    self._pruner = asyncio.get_running_loop().create_task(self._prune_audit())
        return Repository(self._pool)

    async def _prune_audit(self) -> None:
        """Delete audit rows past their retention, hourly (any replica may: it is idempotent)."""
        while True:
            try:
                await audit_repo.prune(self._pool, self.settings.audit_retention_days)
            except Exception:
                logger.exception("pruning the audit log failed")
            await asyncio.sleep(3600)

    async def authenticator(self) -> Authenticator:
        if self.auth is None:
            if not self.admin_key:
                raise ApiError(503, "unavailable", "no admin key configured")
            pool = (await self.repo()).pool
            self.auth = Authenticator(
                self.admin_key,
                lambda digest: keys_repo.by_hash(pool, digest),
                lambda key_id: keys_repo.touch(pool, key_id),
                ttl_s=self.settings.key_cache_ttl_s,
            )
        return self.auth

    def rate_limiter(self) -> RateLimiter:
        if self.limiter is None:
            self.limiter = RateLimiter(self.settings.rate_limit_per_min, self.replicas)
        return self.limiter


_installed: Services | None = None


def install(services: Services) -> None:
    """Make `services` what every route of this process gets (one ingress replica per process)."""
    global _installed
    _installed = services


# Async: FastAPI runs a sync dependency in a worker thread, a thread hop on every request.
async def services() -> Services:
    if _installed is None:
        raise ApiError(503, "unavailable", "service is starting")
    return _installed


Svc = Annotated[Services, Depends(services)]
