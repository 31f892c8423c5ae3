"""How a shell reaches the Ray cluster that `make serve` started: the files the launcher writes
under the data directory, and the `memserve env` exports read back from them.

Ray's CLIs (`serve deploy|status|config`, `ray job submit|list|logs`) talk to the cluster's
dashboard and, with token authentication on, need the cluster's token. The launcher's cluster
has a token of its own (never ~/.ray/auth_token, which every cluster on the machine shares),
so it is written to `<data dir>/ray/auth_token` (mode 0600) and named by RAY_AUTH_TOKEN_PATH.

The dashboard address goes in RAY_DASHBOARD_ADDRESS (the `serve` CLI) and RAY_API_SERVER_ADDRESS
(the `ray job` CLI), not RAY_ADDRESS: an http:// RAY_ADDRESS would also redirect `ray.init()` in
that shell.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

TOKEN_FILE = Path("ray") / "auth_token"
ENV_FILE = Path("ray") / "cluster.json"
# Not a variable: a directory that goes in front of PATH.
PATH_PREPEND = "PATH_PREPEND"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: the argument, else MEMSERVE_DATA_DIR, else ./data (the service's)."""
    return Path(explicit or os.environ.get("MEMSERVE_DATA_DIR") or "data").resolve()


def _private_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # also when the file was there before with wider bits


def write(
    directory: Path, token: str, dashboard_url: str, service_url: str, bin_dir: Path
) -> dict[str, str]:
    """Write the token and the exports of a running cluster; the exports. `bin_dir` (the
    virtualenv's scripts: ray, serve, memserve) goes in front of PATH."""
    token_path = (directory / TOKEN_FILE).resolve()
    _private_write(token_path, token)
    exports = {
        PATH_PREPEND: str(bin_dir),
        "RAY_DASHBOARD_ADDRESS": dashboard_url,
        "RAY_API_SERVER_ADDRESS": dashboard_url,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "MEMSERVE_URL": service_url,
    }
    _private_write(directory / ENV_FILE, json.dumps(exports, indent=2) + "\n")
    return exports


def read(directory: Path) -> dict[str, str] | None:
    """The exports of the cluster running on this data directory, or None when none is."""
    try:
        exports = json.loads((directory / ENV_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return {str(k): str(v) for k, v in exports.items()}


def remove(directory: Path) -> None:
    """Forget a stopped cluster: its token opens nothing any more."""
    for name in (ENV_FILE, TOKEN_FILE):
        (directory / name).unlink(missing_ok=True)


def shell_lines(exports: dict[str, str]) -> str:
    """`export K=V` lines for sh/bash/zsh (`eval "$(memserve env)"`)."""
    return "".join(
        f'export PATH={shlex.quote(v)}:"$PATH"\n'
        if k == PATH_PREPEND
        else f"export {k}={shlex.quote(v)}\n"
        for k, v in exports.items()
    )
