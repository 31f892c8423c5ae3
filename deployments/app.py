"""Typed application builders: `deployments.app:build_app` composes the replica groups of the
main application, `deployments.app:build_index_app` the index application (deployments/apps.py).

Everything hardware-dependent comes from the profile (serve_app/profiles.py); everything
environment-dependent (stores, models) from Settings, resolved here once so every replica of
every group sees the same values.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import BaseModel, ConfigDict, SecretStr
from ray.serve import Application

from deployments.compressor import build_compressor
from deployments.embedder import build_embedder
from deployments.ingest_worker import build_worker
from deployments.ingress import build_ingress
from deployments.memory_index import build_memory_index
from serve_app.llm.config import with_profile_backend
from serve_app.pipeline.compression import compressor_available
from serve_app.profiles import HardwareProfile, get_profile
from serve_app.security.keys import admin_key_of
from serve_app.settings import Settings
from serve_app.storage import embedded_pg
from serve_app.storage.postgres import create_pool, migrate

# The build runs inside the cluster: log where Serve logs go.
logger = logging.getLogger("ray.serve")


class AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: str = "local"


def resolve_settings(profile_embedded: bool) -> Settings:
    """Settings with a reachable PostgreSQL DSN (starting the embedded one if allowed)."""
    settings = Settings()
    if settings.pg_dsn is None:
        if not profile_embedded:
            raise ValueError("this profile needs MEMSERVE_PG_DSN (an external PostgreSQL)")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings = settings.model_copy(
            update={"pg_dsn": embedded_pg.ensure_running(settings.pg_data_dir.resolve())}
        )
    if settings.qdrant_url is None and not profile_embedded:
        raise ValueError("this profile needs MEMSERVE_QDRANT_URL (a Qdrant server)")
    settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    # One admin key for every replica that answers HTTP, wherever it runs: the environment's,
    # or the data directory's on the node that builds the application.
    key = admin_key_of(settings.admin_key, settings.data_dir)
    return settings.model_copy(update={"admin_key": SecretStr(key)})


async def _migrate(dsn: str) -> list[str]:
    pool = await create_pool(dsn, 1, 1)
    try:
        return await migrate(pool)
    finally:
        await pool.close()


def compressor_model(settings: Settings, profile: HardwareProfile) -> str:
    """MEMSERVE_COMPRESSOR_MODEL when set, else the profile's model, else the default id."""
    if "compressor_model" in settings.model_fields_set:
        return settings.compressor_model
    return (profile.compressor and profile.compressor.model) or settings.compressor_model


def compression_status(settings: Settings, profile: HardwareProfile) -> dict:
    """Whether the Compressor group runs, and why (shown in /readyz and logged at start-up).

    Shape: {"enabled": bool, "model": str | None, "reason": str, "rate": float | None,
    "required": bool}. `required`: the profile names its compressor model (the GPU profiles,
    whose image bakes the weights), so running without compression is a fault that fails
    readiness, not a mode.
    """
    if profile.compressor is None:
        return {
            "enabled": False,
            "model": None,
            "reason": f"profile {profile.name!r} has no compressor group",
            "rate": None,
            "required": False,
        }
    model = compressor_model(settings, profile)
    availability = compressor_available(model)
    return {
        "enabled": availability.available,
        "model": model,
        "reason": availability.reason,
        "rate": settings.compression_rate if availability.available else None,
        "required": profile.compressor.model is not None,
    }


def _build_settings(a: AppArgs) -> tuple[HardwareProfile, Settings]:
    """The profile and resolved Settings, with the schema migrated (each application's build
    does it: they build in parallel, and migrations serialise on an advisory lock)."""
    profile = get_profile(a.profile)
    settings = resolve_settings(profile.embedded_stores)
    applied = asyncio.run(_migrate(settings.pg_dsn))
    if applied:
        logger.info("applied migrations: %s", applied)
    return profile, settings


def build_index_app(args: dict | AppArgs | None = None) -> Application:
    """The index application (route /v1/search, deployments/apps.py): the MemoryIndex group."""
    a = args if isinstance(args, AppArgs) else AppArgs(**(args or {}))
    profile, settings = _build_settings(a)
    return build_memory_index(
        profile.memory_index, settings.model_dump(), embedded=settings.qdrant_url is None
    )


def build_app(args: dict | AppArgs | None = None) -> Application:
    """The main application (route /): every group but the MemoryIndex, which its replicas
    reach in the index application deployed beside it."""
    a = args if isinstance(args, AppArgs) else AppArgs(**(args or {}))
    profile, settings = _build_settings(a)
    env = settings.model_dump()

    embedder = build_embedder(profile.embedder, settings.embedding_model)
    compression = compression_status(settings, profile)
    compressor = None
    if compression["enabled"]:
        logger.info("compression on: %s at rate %s", compression["reason"], compression["rate"])
        compressor = build_compressor(
            profile.compressor,
            compression["model"],
            settings.compression_rate,
            settings.compression_force_tokens,
        )
    elif compression["required"]:
        logger.error("compression OFF, and profile %r needs it: %s", profile.name, compression)
    else:
        logger.warning("compression OFF: %s", compression["reason"])
    llm = None
    # Fails the build when the profile needs endpoints that are not configured.
    llm_settings = with_profile_backend(settings.llm, profile.llm)
    if profile.llm.backend == "vllm":
        from deployments.llm_server import build_llm_app

        llm = build_llm_app(profile)
    logger.info(
        "LLM memory construction: %s",
        [b.label for b in llm_settings.backends] or "off (extractive entries)",
    )
    worker = build_worker(profile.worker, env, embedder, compressor, compression, profile.name, llm)
    return build_ingress(profile.ingress, env, worker, embedder)
