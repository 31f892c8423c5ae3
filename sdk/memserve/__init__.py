"""memserve's client package: the HTTP API's models (shared with the server), the clients,
the command line and the MCP server.

Importing it loads httpx and pydantic only, never torch or Ray.
"""

__version__ = "0.1.0"

from memserve._calls import NO_RETRY, Retry  # noqa: E402
from memserve.client import AsyncMemoryClient, MemoryClient  # noqa: E402
from memserve.errors import (  # noqa: E402
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    MemserveError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
)

__all__ = [
    "AsyncMemoryClient",
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "InvalidRequest",
    "MemoryClient",
    "MemserveError",
    "NO_RETRY",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Retry",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "__version__",
]
