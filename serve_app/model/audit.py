"""What one audit row says: who (key, tenant) did what (action) to which user and objects, in
which request. The storage call that makes the change appends it in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AuditRecord:
    key_id: str
    tenant: str
    action: str
    request_id: str | None = None
    user_id: str | None = None  # as the caller named it (never the tenant-scoped form)
    object_ids: tuple[str, ...] = ()

    def with_objects(self, object_ids: list[str] | tuple[str, ...]) -> AuditRecord:
        return replace(self, object_ids=tuple(object_ids))

    def in_tenant(self, tenant: str) -> AuditRecord:
        """The record filed under `tenant` (an admin's change to a tenant's keys)."""
        return replace(self, tenant=tenant)
