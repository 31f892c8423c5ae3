"""The HTTP application of the replica that holds the index: POST /v1/search only, with the
same authentication, rate limits, request ids and error bodies as the whole API
(serve_app.api.app). deployments/memory_index.py serves it under the route prefix /v1/search
and installs Services whose `memory_index` calls that replica in process."""

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.api.auth import AUTHENTICATED
from serve_app.api.errors import install_error_handling
from serve_app.api.request_id import RequestId
from serve_app.api.routes import search
from serve_app.settings import Settings


class FromRoot:
    """Routes by the whole path: Serve mounts an application at its route prefix (the ASGI
    `root_path`), and this one's route is that prefix itself, as in the whole API."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("root_path"):
            scope = {**scope, "root_path": ""}
        await self.app(scope, receive, send)


def create_search_app(settings: Settings) -> FastAPI:
    # The whole API's /openapi.json and /docs describe this route; none here.
    app = FastAPI(title="memserve search", openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handling(app, settings.max_body_bytes, settings.max_import_bytes)
    app.add_middleware(RequestId)
    app.add_middleware(FromRoot)
    app.include_router(search.router, dependencies=AUTHENTICATED)
    return app
