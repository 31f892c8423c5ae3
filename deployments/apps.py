"""The Serve applications memserve deploys, by name.

Two applications, one config: `memserve` (route `/`) serves every route but search through the
Ingress group and runs the Embedder, IngestWorker, Compressor and LLM groups; its `-index`
application (route `/v1/search`) is the MemoryIndex group, which answers searches over HTTP
itself. A search is one hop from the HTTP front (HAProxy or Serve's proxy) to the replica that
holds the index, instead of two (front -> Ingress -> MemoryIndex).
"""

from __future__ import annotations

APP_NAME = "memserve"
SEARCH_ROUTE = "/v1/search"


def index_app(app: str = APP_NAME) -> str:
    """The name of the application that holds `app`'s MemoryIndex group."""
    return f"{app}-index"


def memory_index_handle(app: str = APP_NAME):
    """A handle on `app`'s MemoryIndex. The index application is deployed beside `app` and may
    still be starting when a replica of `app` asks: the handle is made without asking the
    controller whether the deployment exists yet (calls wait for it)."""
    from ray import serve

    return serve.get_deployment_handle("MemoryIndex", index_app(app), _check_exists=False)


def sibling_memory_index():
    """From a replica of a memserve application: the MemoryIndex of that application."""
    from ray import serve

    return memory_index_handle(serve.get_replica_context().app_name)
