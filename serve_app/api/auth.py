"""Bearer-key authentication, declared once: `authenticate` is a dependency of every data
router (serve_app.api.app), routes that need the caller's tenant take `Caller`, admin routes
`Admin`. Missing or bad keys answer 401 with `WWW-Authenticate: Bearer`; a tenant key on an
admin route 403; a key over its rate limit 429 with `Retry-After`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve_app.api.errors import ApiError
from serve_app.api.services import Svc
from serve_app.model.audit import AuditRecord
from serve_app.security.authenticator import AuthError
from serve_app.security.principal import Principal, scoped_user
from serve_app.security.rate_limit import retry_after

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key (ms_...): the admin key or one made with POST /v1/keys.",
)


@dataclass(frozen=True)
class Identity:
    """The authenticated caller of one request."""

    principal: Principal
    request_id: str | None = None

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin

    def user(self, user_id: str) -> str:
        """The stored id of the caller's user `user_id`."""
        return scoped_user(self.tenant, user_id)

    def audit(
        self, action: str, user_id: str | None = None, object_ids: tuple[str, ...] = ()
    ) -> AuditRecord:
        return AuditRecord(
            key_id=self.principal.key_id,
            tenant=self.tenant,
            action=action,
            request_id=self.request_id,
            user_id=user_id,
            object_ids=object_ids,
        )


def unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, {"WWW-Authenticate": 'Bearer realm="memserve"'})


async def authenticate(
    request: Request,
    svc: Svc,
    cred: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Identity:
    if cred is None:
        raise unauthorized("missing_key", "send the header Authorization: Bearer <API key>")
    try:
        principal = await (await svc.authenticator()).check(cred.credentials)
    except AuthError as e:
        raise unauthorized(e.code, e.message) from None
    if not principal.is_admin:
        wait = svc.rate_limiter().take(principal.key_id, principal.rate_limit_per_min)
        if wait:
            raise ApiError(
                429,
                "rate_limited",
                "rate limit of this key reached",
                {"Retry-After": retry_after(wait)},
            )
    return Identity(principal, getattr(request.state, "request_id", None))


Caller = Annotated[Identity, Depends(authenticate)]


async def require_admin(caller: Caller) -> Identity:
    if not caller.is_admin:
        raise ApiError(403, "admin_only", "this route needs the admin key")
    return caller


Admin = Annotated[Identity, Depends(require_admin)]
# What a data router is included with: no route of it answers without a valid key.
AUTHENTICATED = [Depends(authenticate)]
