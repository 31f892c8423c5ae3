"""Who a request acts as, and the one mapping from a tenant's user id to the id stored.

Every store (PostgreSQL rows, vector payloads and collections, BM25 caches, jobs) keys data by
the stored user id, so scoping it by tenant isolates tenants everywhere at once. The admin's
tenant, `default`, stores ids unchanged: data written before keys existed stays reachable.
Other tenants store `tenant/user_id`; '/' is allowed neither in user ids (ID_PATTERN) nor in
tenant names, so two (tenant, user) pairs never map to one stored id.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TENANT = "default"
ADMIN_KEY_ID = "admin"


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    is_admin: bool = False
    rate_limit_per_min: int | None = None  # None: the service's default


def scoped_user(tenant: str, user_id: str) -> str:
    """The stored id of `tenant`'s user `user_id`."""
    return user_id if tenant == DEFAULT_TENANT else f"{tenant}/{user_id}"


def split_user(stored: str) -> tuple[str, str]:
    """(tenant, user id as that tenant names it) of a stored user id."""
    tenant, sep, user_id = stored.partition("/")
    return (tenant, user_id) if sep else (DEFAULT_TENANT, stored)
