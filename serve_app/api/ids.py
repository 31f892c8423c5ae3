"""Ids taken from requests: UUIDs in canonical form (or ApiError 422 naming the id) and users
that must exist (or 404)."""

from __future__ import annotations

import uuid

from serve_app.api.errors import ApiError
from serve_app.storage.postgres import Repository


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(422, f"invalid_{what}_id", f"{what} id {value!r} is not a UUID") from None


def memory_id(value: str) -> str:
    return _uuid(value, "memory")


def job_id(value: str) -> str:
    return _uuid(value, "job")


async def require_user(repo: Repository, user_id: str) -> None:
    """ApiError 404 `unknown_user` unless the user has memories."""
    if not await repo.user_exists(user_id):
        raise ApiError(404, "unknown_user", f"user {user_id!r} has no memories")
