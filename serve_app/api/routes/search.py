"""Search: the one route both HTTP applications serve (serve_app.api.app for the whole API,
serve_app.api.search_app in the replica that holds the index)."""

from fastapi import APIRouter

from memserve.models import SearchRequest, SearchResponse
from serve_app.api.auth import Caller
from serve_app.api.errors import ERRORS, not_found
from serve_app.api.services import Svc

router = APIRouter(tags=["memories"])


@router.post("/v1/search", response_model=SearchResponse, responses=ERRORS)
async def search(req: SearchRequest, svc: Svc, caller: Caller) -> SearchResponse:
    filters = req.filters.model_dump() if req.filters else {}
    args = (caller.user(req.user_id), req.query, req.limit, filters, req.strategy)
    extra = {k: True for k in ("expand_links", "explain") if getattr(req, k)}
    res = await svc.memory_index.search.remote(*args, **extra)
    if res is None:
        raise not_found("unknown_user", f"user {req.user_id!r} has no memories")
    return SearchResponse.from_search(res, req.expand_links)
