"""Re-extraction job (Ray Data): rebuild every memory from the stored raw messages with another
prompt, compression rate, LLM or entry unit, into a new memory version, then switch to it.

    ray job submit -- python -m jobs.reextract [--prompt-file F | --prompt TEXT]
        [--compress-rate R | --no-compress] [--llm-model M [--llm-base-url URL] | --no-llm]
        [--entry-unit U] [--no-activate]

Defaults are what the service extracts with now (the ingest worker's LLM backends, the
compressor at its rate, the service's entry unit and buffer sizes). The new version gets a new
index generation (same embedding model as the active one) that searches do not see until the
switch. An actor pool runs the LightMem pipeline offline per session (compression through the
Compressor group, segmentation with the Embedder, one LLM call per flushed buffer through the
same extraction code, or extractive entries), embeds the entries and writes them - PostgreSQL
rows of the new version, vectors through the MemoryIndex - one transaction per session,
which also records the session's messages as done in the version.

Resumable and idempotent: what a version lacks is known per message (messages.versions), so a
restarted job (same --job-id) redoes only the sessions not finished, and a session redone first
deletes its partial entries of the version. Sessions with messages processed while the job ran
are redone before the switch (catch-up); the switch refuses while any done message is missing.
The replaced version stays 'previous': rollback is one call (`python -m
jobs.generations rollback`, or POST /v1/jobs {"kind": "rollback"}).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import numpy as np
import pandas as pd
import ray

from deployments.apps import memory_index_handle
from jobs.runtime import JobRun, actor_args, base_parser, read_sql
from serve_app.maintenance.reextraction import (
    ExtractionSpec,
    ReextractConfigError,
    SessionExtractor,
    SessionResult,
    llm_record,
    resolve_spec,
)
from serve_app.pipeline.extractive import ENTRY_UNITS
from serve_app.storage import jobs_repo, maintenance_repo, reextraction_repo
from serve_app.storage.generations_repo import GenerationIncomplete
from serve_app.storage.memory_versions_repo import VersionBehind
from serve_app.storage.vectors import VectorPoint

logger = logging.getLogger("memserve.jobs")
KIND = "reextract"
API_KEY_ENV = "MEMSERVE_REEXTRACT_LLM_API_KEY"  # for --llm-base-url; never stored


def _handle(name: str, app: str):
    from ray import serve

    return serve.get_deployment_handle(name, app_name=app)


async def _call(method, *args):
    """A Serve handle call from this actor's own event loop (handles block in `.result()`)."""
    return await asyncio.to_thread(lambda: method.remote(*args).result())


def _has_gpu() -> bool:
    return bool(ray.get_gpu_ids())


def service_config(app: str) -> dict:
    return _handle("IngestWorker", app).extraction_config.remote().result()


class ReextractBatch:
    """Ray Data callable class: sessions in, their entries of the new version written."""

    def __init__(
        self,
        dsn: str,
        app: str,
        generation: int,
        version: int,
        spec: dict,
        model: str,
        served: bool,
        llm_settings,
        torch_threads: int,
    ) -> None:
        from serve_app.llm.config import build_resilient_llm
        from serve_app.pipeline.segmentation import SegmentationConfig
        from serve_app.settings import Settings

        self.conn = jobs_repo.connect(dsn)
        self.memory_index = memory_index_handle(app)
        self.generation, self.version = generation, version
        self.loop = asyncio.new_event_loop()
        if served:
            embedder = _handle("Embedder", app)

            async def embed(texts: list[str]):
                return await _call(embedder.embed, texts)
        else:
            from deployments.embedder import Embedder

            local = Embedder(model, "cuda" if _has_gpu() else "cpu", torch_threads)

            async def embed(texts: list[str]):
                return list(await asyncio.to_thread(local.encode, texts))

        self.embed = embed
        spec_obj = ExtractionSpec(
            prompt=spec["prompt"],
            compress_rate=spec["compress_rate"],
            llm=tuple(spec["llm"]) if spec["llm"] is not None else None,
            entry_unit=spec["entry_unit"],
            sensory_max_tokens=spec["sensory_max_tokens"],
            short_term_max_tokens=spec["short_term_max_tokens"],
        )
        compress = attend = None
        if spec_obj.compress_rate is not None:
            compressor = _handle("Compressor", app)
            rate = spec_obj.compress_rate

            async def compress(texts: list[str]):
                return await _call(compressor.compress_at, texts, rate)

            async def attend(windows: list[list[str]]):
                return await _call(compressor.consecutive_attention, windows)

        llm = None
        if llm_settings is not None:
            vllm = None
            if any(b.kind == "vllm" for b in llm_settings.backends):
                from deployments.llm_server import ServeLLMBackend
                from serve_app.llm.vllm_config import DEPLOYMENT_NAME

                spec_vllm = next(b for b in llm_settings.backends if b.kind == "vllm")
                vllm = ServeLLMBackend(_handle(DEPLOYMENT_NAME, app), model=spec_vllm.model)
            llm = build_resilient_llm(llm_settings, vllm_backend=vllm)
        s = Settings()
        self.extractor = SessionExtractor(
            spec_obj,
            version=version,
            embedding_model=model,
            embed=embed,
            compress=compress,
            attend=attend,
            llm=llm,
            llm_settings=llm_settings,
            segmentation=SegmentationConfig(
                similarity_threshold=s.segment_similarity_threshold,
                max_similarity_threshold=s.segment_max_similarity_threshold,
                threshold_step=s.segment_threshold_step,
                coarse_tolerance=s.segment_coarse_tolerance,
            ),
        )

    def __call__(self, batch: pd.DataFrame) -> dict:
        keys = [
            (str(u), str(s)) for u, s in zip(batch["user_id"], batch["session_id"], strict=True)
        ]
        messages = reextraction_repo.done_messages(self.conn, keys)

        async def one(key):
            result = await self.extractor.run(messages.get(key, []))
            vectors = await self.embed([r.index_text for r in result.rows]) if result.rows else []
            return result, vectors

        async def all_sessions():
            return await asyncio.gather(*(one(k) for k in keys), return_exceptions=True)

        t0 = time.perf_counter()
        outcomes = self.loop.run_until_complete(all_sessions())
        t1 = time.perf_counter()
        n, entries, failed, errors = 0, 0, 0, []
        fallbacks = calls = 0
        for key, out in zip(keys, outcomes, strict=True):
            if isinstance(out, BaseException):
                failed += 1
                errors.append(f"{key[0]}/{key[1]}: {type(out).__name__}: {out}"[:500])
                logger.warning("re-extraction of %s/%s failed: %r", *key, out)
                continue
            result, vectors = out
            self._write(key, result, vectors)
            n += 1
            entries += len(result.rows)
            fallbacks += result.fallbacks
            calls += result.usage.calls
        return {
            "n": np.array([n]),
            "entries": np.array([entries]),
            "failed": np.array([failed]),
            "fallbacks": np.array([fallbacks]),
            "llm_calls": np.array([calls]),
            "extract_s": np.array([t1 - t0]),  # pipeline, LLM and embedding of the batch
            "write_s": np.array([time.perf_counter() - t1]),  # PostgreSQL and vector writes
            "error": np.array([errors[0] if errors else ""]),
        }

    def _write(self, key: tuple[str, str], result: SessionResult, vectors) -> None:
        """One transaction: the session's entries of the version replace what an earlier try
        left, vectors go to the generation, and its messages are recorded as done in it."""
        user_id, session_id = key
        conn, gen, version = self.conn, self.generation, self.version
        with conn.transaction():
            old = reextraction_repo.begin_session_rewrite(conn, gen, version, user_id, session_id)
            if old is None:
                return  # erased meanwhile
            rows = result.rows
            if rows:
                points = [
                    VectorPoint.for_entry(r, np.asarray(v, dtype=np.float32).tolist())
                    for r, v in zip(rows, vectors, strict=True)
                ]
                # Inside the transaction: if it fails nothing commits and the retry rewrites
                # the same points (same ids).
                self.memory_index.index_generation.remote(gen, points).result()
                reextraction_repo.insert_generation_entries(conn, gen, rows)
            stale = sorted(old - {r.id for r in rows})
            if stale:
                self.memory_index.delete_from_generation.remote(gen, user_id, stale).result()
            reextraction_repo.finish_session_rewrite(
                conn, version, user_id, session_id, result.message_ids, result.usage
            )


def main(argv: list[str] | None = None) -> None:
    p = base_parser(KIND, __doc__.splitlines()[0])
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=None, help="system prompt of the LLM extraction")
    prompt.add_argument("--prompt-file", default=None, help="read the system prompt from F")
    comp = p.add_mutually_exclusive_group()
    comp.add_argument("--compress-rate", type=float, default=None, help="LLMLingua-2 rate")
    comp.add_argument("--no-compress", action="store_true", help="no compression")
    llm = p.add_mutually_exclusive_group()
    llm.add_argument("--llm-model", default=None, help="model for the service's endpoints")
    llm.add_argument("--no-llm", action="store_true", help="extractive entries, no LLM")
    p.add_argument(
        "--llm-base-url",
        default=None,
        help=f"another OpenAI-compatible endpoint (with --llm-model; key from ${API_KEY_ENV})",
    )
    p.add_argument("--entry-unit", choices=ENTRY_UNITS, default=None)
    p.add_argument("--sensory-max-tokens", type=int, default=None)
    p.add_argument("--short-term-max-tokens", type=int, default=None)
    p.add_argument("--no-activate", action="store_true", help="build only; switch later")
    p.add_argument("--max-passes", type=int, default=10, help="catch-up rounds before giving up")
    p.add_argument("--torch-threads", type=int, default=1, help="per actor (other model)")
    p.set_defaults(batch_size=4, concurrency=1)
    args = p.parse_args(argv)
    if args.user_id:
        raise SystemExit("a memory version covers every user: --user-id is not allowed")
    if args.llm_base_url and not args.llm_model:
        raise SystemExit("--llm-base-url needs --llm-model")
    text = args.prompt
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            text = f.read()
    params = {
        "prompt": text,
        "compress_rate": args.compress_rate,
        "no_compress": args.no_compress,
        "llm_model": args.llm_model,
        "llm_base_url": args.llm_base_url,
        "no_llm": args.no_llm,
        "entry_unit": args.entry_unit,
        "sensory_max_tokens": args.sensory_max_tokens,
        "short_term_max_tokens": args.short_term_max_tokens,
        "no_activate": args.no_activate,
    }
    params = {k: v for k, v in params.items() if v is not None and v is not False}
    with JobRun(args, KIND, params) as run:
        run_reextract(run, args)


def run_reextract(run: JobRun, args) -> None:
    prm, conn, handle = run.params, run.conn, memory_index_handle(args.app)
    spec, llm_settings = resolve_spec(
        prm, service_config(args.app), api_key=os.environ.get(API_KEY_ENV)
    )
    record = spec.record(run.job_id)
    if "spec" in run.state:
        # A resumed job builds its version exactly as it started to (the service's defaults
        # may have changed since); only the LLM's credentials are looked up again.
        if run.state["spec"]["llm"] != record["llm"]:
            raise ReextractConfigError(
                f"the service's LLM changed since this job started ({run.state['spec']['llm']}"
                f" -> {record['llm']}): start a new job"
            )
        record = run.state["spec"]
    gen = run.state.get("generation")
    info = handle.create_memory_version.remote(record, gen).result()
    if gen is None:
        run.save_state(generation=info["generation"], spec=record)
    gen, version = info["generation"], info["memory_version"]
    logger.info("building memory version %s in generation %s: %s", version, gen, record)

    stats = {"entries": 0, "failed": 0, "fallbacks": 0, "llm_calls": 0}
    seconds = {"extract_s": 0.0, "write_s": 0.0}
    errors: list[str] = []

    def collect(batch: dict) -> None:
        for k in stats:
            stats[k] += int(batch[k].sum())
        for k in seconds:
            seconds[k] += float(batch[k].sum())
        errors.extend(str(e) for e in batch["error"] if e)

    total = reextraction_repo.count_sessions(conn)
    activated = None
    t0 = time.monotonic()
    for attempt in range(args.max_passes):
        behind = reextraction_repo.count_sessions_behind(conn, version)
        if behind:
            stage = "extract" if attempt == 0 else "catch-up"
            failed_before = stats["failed"]
            ds = read_sql(run.dsn, reextraction_repo.sessions_behind(version)).map_batches(
                ReextractBatch,
                fn_constructor_kwargs={
                    "dsn": run.dsn,
                    "app": args.app,
                    "generation": gen,
                    "version": version,
                    "spec": record,
                    "model": info["model"],
                    "served": info["served"],
                    "llm_settings": llm_settings,
                    "torch_threads": args.torch_threads,
                },
                batch_format="pandas",
                **actor_args(args),
            )
            total = max(total, reextraction_repo.count_sessions(conn))
            run.run_stage(stage, ds, total, total - behind, on_batch=collect)
            still_behind = reextraction_repo.count_sessions_behind(conn, version)
            if stats["failed"] > failed_before and still_behind >= behind:
                raise RuntimeError(
                    f"{stats['failed'] - failed_before} sessions could not be re-extracted,"
                    f" e.g. {errors[-1] if errors else '?'}"
                )
            continue
        if prm.get("no_activate"):
            break
        try:
            activated = handle.activate_generation.remote(gen).result()
            break
        except (VersionBehind, GenerationIncomplete) as e:
            # Messages processed since the last pass (or entries not yet embedded): catch up.
            logger.info("not switching yet: %s", e)
    else:
        raise TimeoutError(
            f"memory version {version} still behind after {args.max_passes} passes"
            " (ingestion faster than re-extraction?); run the job again with the same --job-id"
        )
    cfg_note = _worker_note(record, service_config(args.app))
    result = {
        "generation": gen,
        "memory_version": version,
        "extraction": {k: v for k, v in record.items() if k != "prompt"},
        "sessions": reextraction_repo.count_sessions(conn),
        "entries": maintenance_repo.count_entries(conn, None, version),
        "entries_written": stats["entries"],
        "llm_calls": stats["llm_calls"],
        "llm_fallbacks": stats["fallbacks"],
        "session_failures": stats["failed"],
        "seconds": round(time.monotonic() - t0, 3),
        # Inside the actors: the pipeline (compression, segmentation, LLM, embedding) vs the
        # writes; the rest of `seconds` is Ray Data and actor start-up.
        "actor_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "activated": activated is not None,
        "worker_note": cfg_note,
    }
    if activated is not None:
        result.update(activated)
    run.finish(result)


def _worker_note(record: dict, cfg: dict) -> str | None:
    """New messages join the active version through the ingest worker, which applies the
    version's prompt and entry unit but its own LLM and compression: say when they differ."""
    worker_llm = llm_record(cfg["llm_settings"])
    comp = cfg["compression"]
    worker_rate = comp.get("rate") if comp.get("enabled") else None
    diffs = []
    if (list(worker_llm) if worker_llm else None) != record["llm"]:
        diffs.append(f"LLM {worker_llm or 'none'} (this version: {record['llm'] or 'none'})")
    if worker_rate != record["compress_rate"]:
        diffs.append(f"compression {worker_rate} (this version: {record['compress_rate']})")
    if not diffs:
        return None
    return (
        "new messages are extracted by the ingest worker with its own "
        + "; ".join(diffs)
        + ": reconfigure the worker to match"
    )


if __name__ == "__main__":
    main()
