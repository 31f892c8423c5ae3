"""Sleep-time consolidation job (Ray Data).

    ray job submit -- python -m jobs.consolidate [--user-id U] [--decider dedup]

Stages, each resumable (finished work is recorded in PostgreSQL and skipped on restart):
1. queue:  every entry's top-k similar older entries from the vector index (through the
           MemoryIndex) above --min-score -> `consolidation_groups`.
2. decide: the decider (LLM, or the duplicate rule without one) per group -> `decision`.
3. apply:  per user, oldest group first, one transaction per group: tombstones, merged text,
           re-embedding and re-indexing through the MemoryIndex -> `outcome`.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from deployments.apps import memory_index_handle
from jobs.runtime import JobRun, actor_args, base_parser, read_sql
from serve_app.maintenance.consolidation import GroupDecision, older_candidates, plan_group
from serve_app.maintenance.deciders import make_decider
from serve_app.storage import consolidation_repo, jobs_repo, maintenance_repo
from serve_app.storage.locks import lock_user_sync

logger = logging.getLogger("memserve.jobs")
KIND = "consolidate"


class BuildQueue:
    """Ray Data callable class: entries in, their update queues written to PostgreSQL."""

    def __init__(self, dsn: str, job_id: str, app: str, top_k: int, min_score: float) -> None:
        self.conn = jobs_repo.connect(dsn)
        self.memory_index = memory_index_handle(app)
        self.job_id, self.top_k, self.min_score = job_id, top_k, min_score

    def __call__(self, batch: dict) -> dict:
        by_user: dict[str, list[str]] = {}
        for i, u in zip(batch["id"], batch["user_id"], strict=True):
            by_user.setdefault(str(u), []).append(str(i))
        for user, ids in by_user.items():
            # Deeper than top_k: some neighbours are newer than the anchor.
            hits = self.memory_index.neighbours.remote(user, ids, self.top_k * 3).result()
            wanted = set(ids) | {h for lst in hits.values() for h, _ in lst}
            entries = maintenance_repo.load_entries(self.conn, user, sorted(wanted))
            groups = []
            for i in ids:
                anchor = entries.get(i)
                if anchor is None:
                    continue
                near = [(entries[h], s) for h, s in hits.get(i, []) if h in entries]
                cands = older_candidates(anchor, near, top_k=self.top_k, min_score=self.min_score)
                if cands:
                    groups.append((i, [(e.id, round(s, 5)) for e, s in cands]))
            with self.conn.transaction():
                consolidation_repo.save_groups(self.conn, self.job_id, user, groups)
                jobs_repo.mark_done(self.conn, self.job_id, "queue", ids)
        # Every entry flows on to Decide (those without a group are no-ops there).
        return {"anchor_id": np.asarray(batch["id"]).astype(str)}


class Decide:
    """Ray Data callable class: groups in, decisions written to PostgreSQL."""

    def __init__(self, dsn: str, job_id: str, decider: str, min_ratio: float) -> None:
        self.conn = jobs_repo.connect(dsn)
        self.job_id = job_id
        self.decider = make_decider(decider, min_ratio)
        self.loop = asyncio.new_event_loop()

    def __call__(self, batch: dict) -> dict:
        anchors = [str(a) for a in batch["anchor_id"]]
        jobs = []
        for r in consolidation_repo.undecided_groups(self.conn, self.job_id, anchors):
            ids = [r["anchor_id"]] + [c["id"] for c in r["candidates"]]
            entries = maintenance_repo.load_entries(self.conn, r["user_id"], ids)
            anchor = entries.get(r["anchor_id"])
            cands = [entries[c["id"]] for c in r["candidates"] if c["id"] in entries]
            jobs.append((r["anchor_id"], anchor, cands))

        async def decide_all() -> list[GroupDecision]:
            async def one(anchor_id, anchor, cands) -> GroupDecision:
                if anchor is None or not cands:
                    return GroupDecision(anchor_id, (), None, "skipped: entries gone")
                return await self.decider.decide(anchor, cands)

            return list(await asyncio.gather(*(one(*j) for j in jobs)))

        decisions = self.loop.run_until_complete(decide_all())
        consolidation_repo.save_decisions(self.conn, self.job_id, decisions)
        return {"n": np.array([len(anchors)])}


class Apply:
    """Ray Data callable class: one user per row; applies that user's decided groups in order."""

    def __init__(self, dsn: str, job_id: str, app: str) -> None:
        self.conn = jobs_repo.connect(dsn)
        self.memory_index = memory_index_handle(app)
        self.job_id = job_id

    def __call__(self, batch: dict) -> dict:
        n = 0
        for user in (str(u) for u in batch["user_id"]):
            decisions = consolidation_repo.decided_groups(self.conn, self.job_id, user)
            # Groups where everything is kept change nothing: closed in one statement.
            idle = [a for a, d in decisions if not d.changes_something]
            consolidation_repo.set_outcomes(self.conn, self.job_id, idle, "unchanged")
            for anchor_id, decision in decisions:
                if decision.changes_something:
                    self._apply(user, anchor_id, decision)
            n += len(decisions)
        return {"n": np.array([n])}

    def _apply(self, user: str, anchor_id: str, decision: GroupDecision) -> None:
        with self.conn.transaction():
            lock_user_sync(self.conn, user)
            ids = [anchor_id] + [d.candidate_id for d in decision.decisions]
            current = maintenance_repo.load_entries(self.conn, user, ids, lock=True)
            plan = plan_group(decision, current)
            if isinstance(plan, str):
                consolidation_repo.set_outcome(self.conn, self.job_id, anchor_id, plan)
                return
            consolidation_repo.apply_plan(self.conn, self.job_id, user, plan)
            upserts = [maintenance_repo.vector_row(self.conn, anchor_id)] if plan.new_text else []
            deletes = [t.entry_id for t in plan.tombstones]
            # Inside the transaction: if the index write fails nothing commits, and a retry
            # rewrites the same points (same ids).
            self.memory_index.apply_vector_changes.remote(user, upserts, deletes).result()
            maintenance_repo.bump_index_revision(self.conn, user)
            consolidation_repo.set_outcome(self.conn, self.job_id, anchor_id, "applied")


def main(argv: list[str] | None = None) -> None:
    p = base_parser(KIND, __doc__.splitlines()[0])
    p.add_argument("--decider", default="dedup", help="dedup | llm | scripted:<rules.json>")
    p.add_argument("--top-k", type=int, default=5, help="similar older entries per entry")
    p.add_argument("--min-score", type=float, default=0.8, help="cosine similarity threshold")
    p.add_argument("--min-ratio", type=float, default=0.95, help="near-exact duplicate ratio")
    args = p.parse_args(argv)
    params = {
        "decider": args.decider,
        "top_k": args.top_k,
        "min_score": args.min_score,
        "min_ratio": args.min_ratio,
    }
    with JobRun(args, KIND, params) as run:
        run_consolidation(run, args)


def run_consolidation(run: JobRun, args) -> None:
    prm, job, conn = run.params, run.job_id, run.conn
    if "memories_before" not in run.state:
        run.save_state(memories_before=maintenance_repo.count_entries(conn, run.user_id))
    opts = actor_args(args)

    build = {
        "dsn": run.dsn, "job_id": job, "app": args.app,
        "top_k": prm["top_k"], "min_score": prm["min_score"],
    }  # fmt: skip
    decide = {
        "dsn": run.dsn, "job_id": job, "decider": prm["decider"], "min_ratio": prm["min_ratio"],
    }  # fmt: skip
    # Stages 1 and 2 stream into each other: groups are decided while the queue is built.
    ds = (
        read_sql(run.dsn, maintenance_repo.entries_to_visit(job, "queue", run.user_id))
        .map_batches(BuildQueue, fn_constructor_kwargs=build, **opts)
        .map_batches(Decide, fn_constructor_kwargs=decide, **opts)
    )
    done = jobs_repo.count_done(conn, job, "queue")
    run.run_stage("queue+decide", ds, maintenance_repo.count_entries(conn, run.user_id), done)

    if leftover := consolidation_repo.count_groups(conn, job, decided=False):
        # A run stopped between queueing a group and deciding it leaves some undecided.
        ds = read_sql(run.dsn, consolidation_repo.undecided_anchors(job)).map_batches(
            Decide, fn_constructor_kwargs=decide, **opts
        )
        run.run_stage("decide", ds, leftover, 0)

    applied = consolidation_repo.count_groups(conn, job, closed=True)
    ds = read_sql(run.dsn, consolidation_repo.users_to_apply(job)).map_batches(
        Apply,
        fn_constructor_kwargs={"dsn": run.dsn, "job_id": job, "app": args.app},
        **{**opts, "batch_size": 1},
    )
    run.run_stage("apply", ds, consolidation_repo.count_groups(conn, job, decided=True), applied)

    result = consolidation_repo.consolidation_summary(conn, job)
    result["memories_before"] = run.state["memories_before"]
    result["memories_after"] = maintenance_repo.count_entries(conn, run.user_id)
    run.finish(result)


if __name__ == "__main__":
    main()
