"""Embedding rebuild job (Ray Data): re-embed every memory with another model into a new index
generation (new Qdrant collections), then switch searches to it atomically.

    ray job submit -- python -m jobs.reembed --model PATH_OR_NAME [--no-activate]

The embedding runs on an actor pool (fractional GPUs with --num-gpus); vectors are written
through the MemoryIndex, which owns the index. Searches keep using the active generation
meanwhile; entries added or changed during the build are caught up at the end through the
MemoryIndex, and after the switch the MemoryIndex keeps the generation current itself. Resumable:
entries already in the generation are skipped on restart. The replaced generation is kept:
rollback is one call (`python -m jobs.generations rollback`, or POST /v1/jobs with
kind "rollback").
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import ray

from deployments.apps import memory_index_handle
from jobs.runtime import JobRun, actor_args, base_parser, read_sql
from serve_app.storage import maintenance_repo
from serve_app.storage.generations_repo import GenerationIncomplete
from serve_app.storage.vectors import VectorPoint

KIND = "reembed"


class EmbedBatch:
    """The new model, loaded once per actor."""

    def __init__(self, model: str, torch_threads: int) -> None:
        from deployments.embedder import Embedder

        self.embedder = Embedder(model, "cuda" if _has_gpu() else "cpu", torch_threads)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        vectors = self.embedder.encode(batch["index_text"].tolist())
        batch = batch.drop(columns=["index_text"])
        batch["vector"] = list(vectors)
        return batch


def _has_gpu() -> bool:
    import ray

    return bool(ray.get_gpu_ids())


class WriteBatch:
    def __init__(self, app: str, generation: int) -> None:
        self.memory_index = memory_index_handle(app)
        self.generation = generation

    def __call__(self, batch: pd.DataFrame) -> dict:
        points = [
            VectorPoint(
                id=r.id,
                vector=np.asarray(r.vector, dtype=np.float32).tolist(),
                user_id=r.user_id,
                session_id=r.session_id,
                ts=pd.Timestamp(r.ts).to_pydatetime(),
                speaker=r.speaker,
            )
            for r in batch.itertuples(index=False)
        ]
        self.memory_index.index_generation.remote(self.generation, points).result()
        members = [(r.id, pd.Timestamp(r.updated_at).to_pydatetime()) for r in batch.itertuples()]
        self.memory_index.mark_members.remote(self.generation, members).result()
        return {"n": np.array([len(points)])}


def _activate(handle, gen: int, attempts: int = 20) -> dict:
    """Switch; an entry added since the last sweep makes the MemoryIndex refuse: sweep, retry."""
    for _ in range(attempts - 1):
        try:
            return handle.activate_generation.remote(gen).result()
        except GenerationIncomplete:
            handle.sweep_generation.remote(gen).result()
    return handle.activate_generation.remote(gen).result()


def main(argv: list[str] | None = None) -> None:
    p = base_parser(KIND, __doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="sentence-transformers model name or path")
    p.add_argument("--torch-threads", type=int, default=1, help="per embedding actor")
    p.add_argument("--no-activate", action="store_true", help="build only; switch later")
    p.add_argument("--catchup-timeout-s", type=float, default=300.0)
    p.set_defaults(concurrency=1, batch_size=128)
    args = p.parse_args(argv)
    if args.user_id:
        raise SystemExit("a rebuild covers every user: --user-id is not allowed")
    params = {"model": args.model, "activate": not args.no_activate}
    with JobRun(args, KIND, params) as run:
        handle = memory_index_handle(args.app)
        gen = run.state.get("generation")
        if gen is None:
            gen = handle.create_generation.remote(run.params["model"]).result()["generation"]
            run.save_state(generation=gen)
        else:
            handle.create_generation.remote(run.params["model"]).result()
        # The generation indexes one memory version (the one active when it was created).
        version = maintenance_repo.generation_memory_version(run.conn, gen)
        total = maintenance_repo.count_entries(run.conn, None, version)
        done = total - handle.generation_missing.remote(gen).result()
        ds = (
            read_sql(run.dsn, maintenance_repo.entries_missing_from_generation(version, gen))
            .map_batches(
                EmbedBatch,
                fn_constructor_kwargs={
                    "model": run.params["model"],
                    "torch_threads": args.torch_threads,
                },
                batch_format="pandas",
                **actor_args(args),
            )
            .map_batches(
                WriteBatch,
                fn_constructor_kwargs={"app": args.app, "generation": gen},
                batch_format="pandas",
                compute=ray.data.ActorPoolStrategy(size=1),
                num_cpus=0.05,
            )
        )
        p = run.run_stage("embed", ds, total, done)
        # Entries added or changed while building: the MemoryIndex embeds them (with the new
        # model), a bounded batch per call, until none is missing.
        deadline = time.monotonic() + args.catchup_timeout_s
        while (missing := handle.generation_missing.remote(gen).result()) > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"generation {gen} still lacks {missing} entries")
            handle.sweep_generation.remote(gen).result()
        result = {
            "generation": gen,
            "model": run.params["model"],
            "entries": p.done,
            "rate_per_s": p.rate_per_s,
        }
        if run.params["activate"]:
            result.update(_activate(handle, gen))
        run.finish(result)


if __name__ == "__main__":
    main()
