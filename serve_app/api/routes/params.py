"""Query parameters shared by several routes."""

from typing import Annotated

from fastapi import Path, Query

from memserve.models import ID_PATTERN

UserId = Annotated[str, Query(min_length=1, max_length=128, pattern=ID_PATTERN)]
SessionId = Annotated[str | None, Query(min_length=1, max_length=128, pattern=ID_PATTERN)]
OptionalUserId = Annotated[str | None, Query(min_length=1, max_length=128, pattern=ID_PATTERN)]
SessionPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
UserPath = Annotated[str, Path(min_length=1, max_length=128, pattern=ID_PATTERN)]
