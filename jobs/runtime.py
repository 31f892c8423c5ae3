"""What every job driver shares: arguments, the job row's life cycle, Ray Data reads from
PostgreSQL and the progress loop. Drivers run inside the service's Ray cluster (`ray job
submit` or POST /v1/jobs) and reach the vector index only through the MemoryIndex."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import time
import traceback
import uuid
from collections.abc import Callable

import psycopg
import ray

from serve_app.maintenance.progress import Progress
from serve_app.settings import Settings
from serve_app.storage import jobs_repo

logger = logging.getLogger("memserve.jobs")


def base_parser(kind: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m jobs.{kind}", description=description)
    p.add_argument("--job-id", default=None, help="resume this job (default: a new one)")
    p.add_argument("--user-id", default=None, help="only this user (default: everyone)")
    p.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: MEMSERVE_PG_DSN)")
    p.add_argument("--app", default="memserve", help="Serve application name")
    p.add_argument("--batch-size", type=int, default=64, help="rows per map_batches call")
    p.add_argument("--concurrency", type=int, default=1, help="actors per pool")
    # Logical CPUs: the local profile leaves ~0.4 of 2 CPUs unreserved next to the Serve app.
    p.add_argument("--num-cpus", type=float, default=0.1, help="CPUs per actor")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (fractional)")
    return p


def connection_factory(dsn: str) -> Callable[[], psycopg.Connection]:
    # Ray Data's read_sql wants a DB-API 2 connection; psycopg is one (asyncpg is not).
    return functools.partial(psycopg.connect, dsn)


def read_sql(dsn: str, query: tuple[str, tuple]) -> ray.data.Dataset:
    """A dataset of `query` (SQL text and parameters from a storage repository)."""
    sql, params = query
    return ray.data.read_sql(
        sql, connection_factory(dsn), sql_params=params or None, ray_remote_args={"num_cpus": 0.05}
    )


def actor_args(args: argparse.Namespace) -> dict:
    """map_batches options for a pool of callable-class actors (fractional GPUs if asked)."""
    opts: dict = {
        "compute": ray.data.ActorPoolStrategy(size=max(1, args.concurrency)),
        "batch_size": args.batch_size,
        "num_cpus": args.num_cpus,
    }
    if args.num_gpus:
        opts["num_gpus"] = args.num_gpus
    return opts


def _submission_id() -> str | None:
    """This driver's Ray job submission id (None when not started by `ray job submit`), so
    GET /v1/jobs can ask Ray whether a driver that stopped reporting is still alive."""
    try:
        from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

        raw = os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
        return json.loads(raw).get("metadata", {}).get("job_submission_id") if raw else None
    except Exception:  # a private constant of Ray's: losing it only loses the liveness check
        return None


class JobRun:
    """One run of a job: its row in `jobs`, progress reports and the final status."""

    def __init__(self, args: argparse.Namespace, kind: str, params: dict) -> None:
        self.dsn = args.dsn or Settings().pg_dsn
        if not self.dsn:
            raise SystemExit("no PostgreSQL DSN: pass --dsn or set MEMSERVE_PG_DSN")
        self.job_id = str(uuid.UUID(args.job_id)) if args.job_id else str(uuid.uuid4())
        self.kind = kind
        self.user_id = args.user_id
        self.conn = jobs_repo.connect(self.dsn)
        self.row = jobs_repo.ensure_job(self.conn, self.job_id, kind, self.user_id, params)
        # A resumed job keeps the parameters it was started with.
        self.params = {**params, **(self.row["params"] or {})}
        self.state: dict = dict(self.row["state"] or {})
        self._last_report = 0.0
        self.stages: dict[str, dict] = {}  # this run's per-stage rows, seconds and rate

    def __enter__(self) -> JobRun:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=True)
        ray.data.DataContext.get_current().enable_progress_bars = False
        jobs_repo.start_job(self.conn, self.job_id, _submission_id())
        logger.info(
            "job %s (%s) user=%s params=%s", self.job_id, self.kind, self.user_id, self.params
        )
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            err = "".join(traceback.format_exception_only(exc_type, exc)).strip()
            # Ray stops a job with SIGTERM, which its driver sees as SystemExit.
            stopped = isinstance(exc, SystemExit | KeyboardInterrupt)
            logger.error("job %s %s: %s", self.job_id, "stopped" if stopped else "failed", err)
            jobs_repo.fail_job(self.conn, self.job_id, err, "stopped" if stopped else "failed")
        self.conn.close()

    def save_state(self, **state) -> None:
        self.state.update(state)
        jobs_repo.merge_state(self.conn, self.job_id, state)

    def report(self, stage: str, p: Progress, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= 1.0:
            self._last_report = now
            jobs_repo.report_progress(
                self.conn, self.job_id, stage, p.total, p.done, p.rate_per_s, p.eta_s
            )
            logger.info("job %s %s", self.job_id, p.line(stage))

    def run_stage(
        self,
        stage: str,
        ds: ray.data.Dataset,
        total: int,
        done: int,
        on_batch: Callable[[dict], None] | None = None,
    ) -> Progress:
        """Drive `ds` (whose batches carry an `n` column: rows finished) to the end;
        `on_batch` sees every output batch (e.g. to collect errors the actors report)."""
        p = Progress(total=max(total, done), done=done)
        self.report(stage, p, force=True)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            if on_batch is not None:
                on_batch(batch)
            p.add(int(batch["n"].sum()))
            p.total = max(p.total, p.done)
            self.report(stage, p)
        self.report(stage, p, force=True)
        moved = p.done - done
        self.stages[stage] = {
            "rows": moved,
            "seconds": round(p.elapsed_s, 3),
            "rate_per_s": round(moved / p.elapsed_s, 2) if p.elapsed_s > 0 else None,
        }
        return p

    def finish(self, result: dict) -> None:
        result = {**result, "stages": self.stages}
        jobs_repo.finish_job(self.conn, self.job_id, result)
        logger.info("job %s done: %s", self.job_id, result)
