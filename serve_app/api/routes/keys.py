"""API keys (admin key only): create (the secret is shown once), list, revoke."""

import uuid

from fastapi import APIRouter, Query

from memserve.models import KeyCreate, KeyCreated, KeyInfo, KeyList, Tenant
from serve_app.api.auth import Admin
from serve_app.api.errors import ERRORS, ApiError, not_found
from serve_app.api.services import Svc
from serve_app.security.authenticator import KeyRecord
from serve_app.security.keys import key_hash, new_key
from serve_app.storage import keys_repo

router = APIRouter(tags=["keys"])


def _info(rec: KeyRecord) -> KeyInfo:
    return KeyInfo.model_validate(rec, from_attributes=True)


def _key_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(422, "invalid_key_id", f"key id {value!r} is not a UUID") from None


@router.post("/v1/keys", status_code=201, response_model=KeyCreated, responses=ERRORS)
async def create_key(req: KeyCreate, svc: Svc, admin: Admin) -> KeyCreated:
    secret = new_key()
    audit = admin.audit("key_create").in_tenant(req.tenant)
    rec = await keys_repo.create(
        (await svc.repo()).pool,
        key_hash(secret),
        req.tenant,
        req.name,
        req.expires_at,
        req.rate_limit_per_min,
        audit,
    )
    return KeyCreated(**_info(rec).model_dump(), key=secret)


@router.get("/v1/keys", response_model=KeyList, responses=ERRORS)
async def list_keys(svc: Svc, _: Admin, tenant: Tenant | None = Query(None)) -> KeyList:
    rows = await keys_repo.list_keys((await svc.repo()).pool, tenant)
    return KeyList(keys=[_info(r) for r in rows])


@router.delete("/v1/keys/{key_id}", response_model=KeyInfo, responses=ERRORS)
async def revoke_key(key_id: str, svc: Svc, admin: Admin) -> KeyInfo:
    """Revoke a key: refused at once by this replica, by every other within the key cache's
    TTL (MEMSERVE_KEY_CACHE_TTL_S, 1 s by default)."""
    kid = _key_id(key_id)
    pool = (await svc.repo()).pool
    rec = await keys_repo.revoke(pool, kid, admin.audit("key_revoke"))
    if rec is None:
        raise not_found("unknown_key", f"key {kid} not found")
    (await svc.authenticator()).forget(kid)
    return _info(rec)
