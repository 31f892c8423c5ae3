"""Result models of the routes whose answers the server does not describe with a shared model:
session work acknowledgements and index generations. Lenient: fields the
service adds later are kept (extra="allow"), fields it leaves out are None."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class Accepted(_Lenient):
    """A 202 answer of the session routes (flush, summary, retry): what was queued."""


class Generations(_Lenient):
    """GET /v1/generations: the index generations and the memory version each one serves."""

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()
