"""Which decider / linker a job uses, from a short spec string (CLI flag or POST /v1/jobs):

- `dedup` (consolidation) / `similarity` (linking): no LLM.
- `llm`: the backends configured by MEMSERVE_LLM__BACKENDS (serve_app.llm.config).
- `scripted:<rules.json>`: the scripted engine double (serve_app.llm.scripted) answering by
  rules, for tests and benchmarks that need scripted LLM decisions on a real cluster.

Rules file: {"consolidate": [{"new": "...", "older": "...", "action": "update|delete|keep",
"reason": "...", "merged_text": "..."}], "link": [{"a": "...", "b": "...", "reason": "..."}]};
"new"/"older"/"a"/"b" are substrings matched case-insensitively.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from serve_app.maintenance.consolidation import DedupDecider, LLMDecider
from serve_app.maintenance.linking import LLMLinker, SimilarityLinker


def _numbered(block: str) -> list[str]:
    return [re.sub(r"^\d+\.\s*", "", ln) for ln in block.strip().splitlines() if ln.strip()]


def consolidation_responder(rules: list[dict]):
    def respond(messages, schema) -> str:
        user = messages[-1]["content"]
        new_part, _, older_part = user.partition("\n\nOLDER memories:\n")
        new = new_part.removeprefix("NEW memory:\n").lower()
        decisions, merged = [], None
        for i, older in enumerate(_numbered(older_part), 1):
            for r in rules:
                if r["new"].lower() in new and r["older"].lower() in older.lower():
                    decisions.append(
                        {"candidate": i, "action": r["action"], "reason": r.get("reason", "rule")}
                    )
                    if r["action"] == "update":
                        merged = r.get("merged_text") or merged
                    break
            else:
                decisions.append({"candidate": i, "action": "keep", "reason": "no rule"})
        return json.dumps({"decisions": decisions, "merged_text": merged})

    return respond


def link_responder(rules: list[dict]):
    def respond(messages, schema) -> str:
        user = messages[-1]["content"]
        head, _, cands = user.partition("\n\nCandidates:\n")
        anchor = head.removeprefix("Memory:\n").lower()
        links = []
        for i, c in enumerate(_numbered(cands), 1):
            for r in rules:
                a, b = r["a"].lower(), r["b"].lower()
                if (a in anchor and b in c.lower()) or (b in anchor and a in c.lower()):
                    links.append({"candidate": i, "reason": r.get("reason", "rule")})
                    break
        return json.dumps({"links": links})

    return respond


def _llm(spec: str, section: str):
    # Imported here: LLM-free jobs need none of it (see consolidation.py).
    from pydantic_settings import BaseSettings, SettingsConfigDict

    from serve_app.llm.config import LLMSettings, build_resilient_llm
    from serve_app.llm.resilience import ResilientLLM, RetryPolicy
    from serve_app.llm.scripted import Respond, ScriptedBackend

    class _LLMEnv(BaseSettings):
        model_config = SettingsConfigDict(
            env_prefix="MEMSERVE_", env_nested_delimiter="__", extra="ignore"
        )
        llm: LLMSettings = LLMSettings()

    if spec == "llm":
        llm = build_resilient_llm(_LLMEnv().llm)
        if llm is None:
            raise ValueError("decider 'llm' but no LLM backend is configured (MEMSERVE_LLM__...)")
        return llm
    path = Path(spec.removeprefix("scripted:"))
    rules = json.loads(path.read_text()).get(section, [])
    make = consolidation_responder if section == "consolidate" else link_responder
    backend = ScriptedBackend(name="scripted", model="scripted-rules", default=Respond(make(rules)))
    return ResilientLLM([backend], policy=RetryPolicy(backoff_s=(), repair_attempts=0))


def make_decider(spec: str, min_ratio: float):
    if spec == "dedup":
        return DedupDecider(min_ratio)
    if spec == "llm" or spec.startswith("scripted:"):
        return LLMDecider(_llm(spec, "consolidate"))
    raise ValueError(f"unknown decider {spec!r}: dedup | llm | scripted:<rules.json>")


def make_linker(spec: str, min_score: float, max_links: int):
    if spec == "similarity":
        return SimilarityLinker(min_score, max_links)
    if spec == "llm" or spec.startswith("scripted:"):
        return LLMLinker(_llm(spec, "link"), min_score, max_links)
    raise ValueError(f"unknown linker {spec!r}: similarity | llm | scripted:<rules.json>")
