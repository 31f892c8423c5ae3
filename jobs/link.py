"""Memory linking job (Ray Data): links between related memories, with a reason.

    ray job submit -- python -m jobs.link [--user-id U] [--linker similarity]

Each entry's most similar entries come from the vector index (through the MemoryIndex);
the linker (LLM, or similarity with shared words without one) keeps the related ones.
Links go to `memory_links`; `expand_links: true` in /v1/search returns them. Resumable: entries
already linked by this job are skipped on restart, and links are upserted per pair.
"""

from __future__ import annotations

import asyncio

import numpy as np

from deployments.apps import memory_index_handle
from jobs.runtime import JobRun, actor_args, base_parser, read_sql
from serve_app.maintenance.deciders import make_linker
from serve_app.storage import jobs_repo, links_repo, maintenance_repo

KIND = "link"


class LinkBatch:
    def __init__(
        self, dsn: str, job_id: str, app: str, linker: str, top_k: int, min_score: float
    ) -> None:
        self.conn = jobs_repo.connect(dsn)
        self.memory_index = memory_index_handle(app)
        self.job_id, self.top_k = job_id, top_k
        self.linker = make_linker(linker, min_score, top_k)
        self.loop = asyncio.new_event_loop()

    def __call__(self, batch: dict) -> dict:
        by_user: dict[str, list[str]] = {}
        for i, u in zip(batch["id"], batch["user_id"], strict=True):
            by_user.setdefault(str(u), []).append(str(i))
        for user, ids in by_user.items():
            hits = self.memory_index.neighbours.remote(user, ids, self.top_k).result()
            wanted = set(ids) | {h for lst in hits.values() for h, _ in lst}
            entries = maintenance_repo.load_entries(self.conn, user, sorted(wanted))

            tasks = [
                self.linker.links(
                    entries[i], [(entries[h], s) for h, s in hits.get(i, []) if h in entries]
                )
                for i in ids
                if i in entries
            ]
            links = self.loop.run_until_complete(_gather(tasks))
            with self.conn.transaction():
                links_repo.save_links(self.conn, self.job_id, user, links)
                jobs_repo.mark_done(self.conn, self.job_id, "link", ids)
        return {"n": np.array([len(batch["id"])])}


async def _gather(coros) -> list:
    return [lk for lst in await asyncio.gather(*coros) for lk in lst]


def main(argv: list[str] | None = None) -> None:
    p = base_parser(KIND, __doc__.splitlines()[0])
    p.add_argument("--linker", default="similarity", help="similarity | llm | scripted:<rules>")
    p.add_argument("--top-k", type=int, default=5, help="candidates (and links) per entry")
    p.add_argument("--min-score", type=float, default=0.6, help="cosine similarity threshold")
    args = p.parse_args(argv)
    params = {"linker": args.linker, "top_k": args.top_k, "min_score": args.min_score}
    with JobRun(args, KIND, params) as run:
        prm, job = run.params, run.job_id
        ds = read_sql(run.dsn, maintenance_repo.entries_to_visit(job, "link", run.user_id))
        ds = ds.map_batches(
            LinkBatch,
            fn_constructor_kwargs={
                "dsn": run.dsn, "job_id": job, "app": args.app, "linker": prm["linker"],
                "top_k": prm["top_k"], "min_score": prm["min_score"],
            },
            **actor_args(args),
        )  # fmt: skip
        done = jobs_repo.count_done(run.conn, job, "link")
        run.run_stage("link", ds, maintenance_repo.count_entries(run.conn, run.user_id), done)
        links = links_repo.count_job_links(run.conn, job)
        entries = maintenance_repo.count_entries(run.conn, run.user_id)
        run.finish({"entries": entries, "links": links})


if __name__ == "__main__":
    main()
