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


async def require_user(repo: Repository, user_id: str, shown: str | None = None) -> None:
    """ApiError 404 `unknown_user` unless the user (stored id `user_id`) has memories; the
    message names `shown`, the id as the caller gave it (default: `user_id`)."""
    if not await repo.user_exists(user_id):
        raise ApiError(404, "unknown_user", f"user {shown or user_id!r} has no memories")
