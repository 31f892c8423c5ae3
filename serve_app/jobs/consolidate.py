"""Sleep-time consolidation job (Ray Data).

    ray job submit -- python -m serve_app.jobs.consolidate [--user-id U] [--decider dedup]

Stages, each resumable (finished work is recorded in PostgreSQL and skipped on restart):
1. queue:  every entry's top-k similar older entries from the vector index (through the
           MemoryIndex) above --min-score -> `consolidation_groups`.
2. decide: the decider (LLM, or the duplicate rule without one) per group -> `decision`.
3. apply:  per user, oldest group first, one transaction per group: tombstones, merged text,
           re-embedding and re-indexing through the router -> `outcome`.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from serve_app.jobs import store
from serve_app.jobs.consolidation import GroupDecision, older_candidates, plan_group
from serve_app.jobs.deciders import make_decider
from serve_app.jobs.runtime import JobRun, actor_args, base_parser, read_sql, router
from serve_app.storage.postgres import ACTIVE_VERSION

logger = logging.getLogger("memserve.jobs")
KIND = "consolidate"


class BuildQueue:
    """Ray Data callable class: entries in, their update queues written to PostgreSQL."""

    def __init__(self, dsn: str, job_id: str, app: str, top_k: int, min_score: float) -> None:
        self.conn = store.connect(dsn)
        self.router = router(app)
        self.job_id, self.top_k, self.min_score = job_id, top_k, min_score

    def __call__(self, batch: dict) -> dict:
        by_user: dict[str, list[str]] = {}
        for i, u in zip(batch["id"], batch["user_id"], strict=True):
            by_user.setdefault(str(u), []).append(str(i))
        for user, ids in by_user.items():
            # Deeper than top_k: some neighbours are newer than the anchor.
            hits = self.router.neighbours.remote(user, ids, self.top_k * 3).result()
            wanted = set(ids) | {h for lst in hits.values() for h, _ in lst}
            entries = store.load_entries(self.conn, user, sorted(wanted))
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
                store.save_groups(self.conn, self.job_id, user, groups)
                store.mark_done(self.conn, self.job_id, "queue", ids)
        # Every entry flows on to Decide (those without a group are no-ops there).
        return {"anchor_id": np.asarray(batch["id"]).astype(str)}


class Decide:
    """Ray Data callable class: groups in, decisions written to PostgreSQL."""

    def __init__(self, dsn: str, job_id: str, decider: str, min_ratio: float) -> None:
        self.conn = store.connect(dsn)
        self.job_id = job_id
        self.decider = make_decider(decider, min_ratio)
        self.loop = asyncio.new_event_loop()

    def __call__(self, batch: dict) -> dict:
        anchors = [str(a) for a in batch["anchor_id"]]
        rows = self.conn.execute(
            "SELECT anchor_id::text AS anchor_id, user_id, candidates FROM consolidation_groups"
            " WHERE job_id=%s AND anchor_id = ANY(%s::uuid[]) AND decision IS NULL",
            (self.job_id, anchors),
        ).fetchall()
        jobs = []
        for r in rows:
            ids = [r["anchor_id"]] + [c["id"] for c in r["candidates"]]
            entries = store.load_entries(self.conn, r["user_id"], ids)
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
        store.save_decisions(self.conn, self.job_id, decisions)
        return {"n": np.array([len(anchors)])}


def _undecided(conn, job: str) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM consolidation_groups WHERE job_id=%s AND decision IS NULL",
        (job,),
    ).fetchone()["n"]


class Apply:
    """Ray Data callable class: one user per row; applies that user's decided groups in order."""

    def __init__(self, dsn: str, job_id: str, app: str) -> None:
        self.conn = store.connect(dsn)
        self.router = router(app)
        self.job_id = job_id

    def __call__(self, batch: dict) -> dict:
        n = 0
        for user in (str(u) for u in batch["user_id"]):
            groups = self.conn.execute(
                "SELECT g.anchor_id::text AS anchor_id, g.decision FROM consolidation_groups g"
                " LEFT JOIN memory_entries e ON e.id = g.anchor_id"
                " WHERE g.job_id=%s AND g.user_id=%s AND g.decision IS NOT NULL"
                " AND g.outcome IS NULL"
                " ORDER BY e.ts NULLS LAST, e.session_id, e.source_message_ids, g.anchor_id",
                (self.job_id, user),
            ).fetchall()
            decisions = [(g["anchor_id"], GroupDecision.from_json(g["decision"])) for g in groups]
            # Groups where everything is kept change nothing: closed in one statement.
            idle = [a for a, d in decisions if not d.changes_something]
            self.conn.execute(
                "UPDATE consolidation_groups SET outcome='unchanged' WHERE job_id=%s"
                " AND anchor_id = ANY(%s::uuid[])",
                (self.job_id, idle),
            )
            for anchor_id, decision in decisions:
                if decision.changes_something:
                    self._apply(user, anchor_id, decision)
            n += len(decisions)
        return {"n": np.array([n])}

    def _apply(self, user: str, anchor_id: str, decision: GroupDecision) -> None:
        with self.conn.transaction():
            store.lock_user_shared(self.conn, user)
            ids = [anchor_id] + [d.candidate_id for d in decision.decisions]
            current = store.load_entries(self.conn, user, ids, lock=True)
            plan = plan_group(decision, current)
            if isinstance(plan, str):
                store.set_outcome(self.conn, self.job_id, anchor_id, plan)
                return
            store.apply_plan(self.conn, self.job_id, user, plan)
            upserts = [store.vector_row(self.conn, anchor_id)] if plan.new_text else []
            deletes = [t.entry_id for t in plan.tombstones]
            # Inside the transaction: if the index write fails nothing commits, and a retry
            # rewrites the same points (same ids).
            self.router.apply_vector_changes.remote(user, upserts, deletes).result()
            store.bump_index_revision(self.conn, user)
            store.set_outcome(self.conn, self.job_id, anchor_id, "applied")


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
    where, scope = store.user_scope(run.user_id, "e.user_id")
    if "memories_before" not in run.state:
        run.save_state(memories_before=store.count_entries(conn, run.user_id))
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
        read_sql(
            run.dsn,
            f"SELECT e.id::text AS id, e.user_id FROM memory_entries e WHERE {where}"
            f" AND e.version = {ACTIVE_VERSION} AND NOT"
            " EXISTS (SELECT 1 FROM job_items j WHERE j.job_id=%s AND j.stage='queue'"
            " AND j.item_id = e.id::text) ORDER BY e.user_id, e.id",
            (*scope, job),
        )
        .map_batches(BuildQueue, fn_constructor_kwargs=build, **opts)
        .map_batches(Decide, fn_constructor_kwargs=decide, **opts)
    )
    done = store.count_done(conn, job, "queue")
    run.run_stage("queue+decide", ds, store.count_entries(conn, run.user_id), done)

    if leftover := _undecided(conn, job):
        # A run stopped between queueing a group and deciding it leaves some undecided.
        ds = read_sql(
            run.dsn,
            "SELECT anchor_id::text AS anchor_id FROM consolidation_groups"
            " WHERE job_id=%s AND decision IS NULL ORDER BY anchor_id",
            (job,),
        ).map_batches(Decide, fn_constructor_kwargs=decide, **opts)
        run.run_stage("decide", ds, leftover, 0)

    def groups(decided: bool) -> int:
        return conn.execute(
            "SELECT count(*) AS n FROM consolidation_groups WHERE job_id=%s"
            + (" AND decision IS NOT NULL" if decided else ""),
            (job,),
        ).fetchone()["n"]

    applied = conn.execute(
        "SELECT count(*) AS n FROM consolidation_groups WHERE job_id=%s AND outcome IS NOT NULL",
        (job,),
    ).fetchone()["n"]
    ds = read_sql(
        run.dsn,
        "SELECT DISTINCT user_id FROM consolidation_groups WHERE job_id=%s"
        " AND decision IS NOT NULL AND outcome IS NULL ORDER BY user_id",
        (job,),
    ).map_batches(
        Apply,
        fn_constructor_kwargs={"dsn": run.dsn, "job_id": job, "app": args.app},
        **{**opts, "batch_size": 1},
    )
    run.run_stage("apply", ds, groups(True), applied)

    result = store.consolidation_summary(conn, job)
    result["memories_before"] = run.state["memories_before"]
    result["memories_after"] = store.count_entries(conn, run.user_id)
    run.finish(result)


if __name__ == "__main__":
    main()
