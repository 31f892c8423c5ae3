"""API key secrets: generation, the hash that is stored, and the bootstrap admin key."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from pydantic import SecretStr

PREFIX = "ms_"
ADMIN_KEY_FILE = "admin.key"


def new_key() -> str:
    """A fresh secret: the recognisable prefix and 256 random bits."""
    return PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    # Keys carry 256 random bits: a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(PREFIX) and 20 <= len(token) <= 200 and token.isascii()


def admin_key_path(data_dir: Path) -> Path:
    return data_dir / ADMIN_KEY_FILE


def admin_key_of(configured: SecretStr | None, data_dir: Path) -> str:
    """The configured admin key (MEMSERVE_ADMIN_KEY), else the data directory's."""
    return ensure_admin_key(configured.get_secret_value() if configured else None, data_dir)[0]


def ensure_admin_key(env_key: str | None, data_dir: Path) -> tuple[str, Path | None]:
    """(admin key, file it is kept in or None when it came from the environment). Without
    MEMSERVE_ADMIN_KEY the first start writes a new key to `data_dir/admin.key`, readable by
    its owner only; later starts (and every replica) read that file."""
    if env_key:
        return env_key, None
    path = admin_key_path(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of the same start wrote it first
        else:
            with os.fdopen(fd, "w") as f:
                f.write(new_key() + "\n")
    return path.read_text().strip(), path
