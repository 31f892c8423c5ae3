"""The FastAPI application of HTTP API v1: error handling and every router, nothing that needs
Ray (deployments/ingress.py serves it and installs the Services the routes work with)."""

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from serve_app.api import mcp
from serve_app.api.auth import AUTHENTICATED
from serve_app.api.errors import install_error_handling
from serve_app.api.request_id import RequestId
from serve_app.api.routes import (
    audit,
    health,
    jobs,
    keys,
    memories,
    search,
    sessions,
    users,
    viewer,
)
from serve_app.settings import Settings
from serve_app.ui import static_dir

# Routers answered without a key; every other router needs one (serve_app/api/auth.py).
PUBLIC = (health,)
PROTECTED = (memories, search, sessions, users, jobs, keys, audit, viewer)


def create_app(settings: Settings) -> FastAPI:
    mcp_endpoint = mcp.McpEndpoint(lambda: app, settings.http_host)
    app = FastAPI(
        title="memserve",
        version="1",
        description="Long-term memory for LLM agents.",
        lifespan=mcp_endpoint.lifespan,
    )
    install_error_handling(app, settings.max_body_bytes, settings.max_import_bytes)
    app.add_middleware(RequestId)
    for area in PUBLIC:
        app.include_router(area.router)
    for area in PROTECTED:
        app.include_router(area.router, dependencies=AUTHENTICATED)
    # The viewer's pages are public (its sign-in page must load); its API calls carry the key.
    app.mount("/ui/", StaticFiles(directory=static_dir(), html=True), name="ui")

    @app.get("/ui", include_in_schema=False)
    async def ui() -> RedirectResponse:
        return RedirectResponse("/ui/")

    # The MCP server (streamable HTTP) at /mcp, its tools calling this app in process.
    mcp_endpoint.install(app)
    return app
