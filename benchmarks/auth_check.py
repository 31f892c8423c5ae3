"""What a key check costs per request: the admin key, a tenant key answered from the replica's
cache (the common case), and a cache miss that reads the keys table of a real PostgreSQL, each
followed by the rate limiter's token take. Prints JSON (microseconds) and writes
benchmarks/results/auth_check.json.

    python -m benchmarks.auth_check [--pg-admin-dsn postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, _create_db, _drop_db, machine_info, write_result
from serve_app.model.audit import AuditRecord
from serve_app.security.authenticator import Authenticator
from serve_app.security.keys import key_hash, new_key
from serve_app.security.rate_limit import RateLimiter
from serve_app.storage import keys_repo
from serve_app.storage.postgres import create_pool, migrate


def micros(samples: Sequence[float]) -> dict:
    arr = np.asarray(samples) * 1e6
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "n": int(arr.size),
        "p50_us": round(float(p50), 1),
        "p95_us": round(float(p95), 1),
        "p99_us": round(float(p99), 1),
        "max_us": round(float(arr.max()), 1),
    }


async def timed(auth: Authenticator, limiter: RateLimiter, key: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        p = await auth.check(key)
        limiter.take(p.key_id, p.rate_limit_per_min)
        out.append(time.perf_counter() - t0)
    return out


async def run(dsn: str, n: int) -> dict:
    pool = await create_pool(dsn, 1, 4)
    try:
        await migrate(pool)
        admin, tenant = new_key(), new_key()
        audit = AuditRecord("admin", "default", "key_create")
        for _ in range(1000):  # a keys table that is not empty
            await keys_repo.create(pool, key_hash(new_key()), "other", "k", None, None, audit)
        await keys_repo.create(pool, key_hash(tenant), "acme", "bench", None, None, audit)

        def authenticator(ttl_s: float) -> Authenticator:
            return Authenticator(
                admin,
                lambda d: keys_repo.by_hash(pool, d),
                lambda i: keys_repo.touch(pool, i),
                ttl_s=ttl_s,
            )

        limiter = RateLimiter(10**9)
        cached = authenticator(1.0)
        await timed(cached, limiter, tenant, 100)  # warm-up
        return {
            "admin_key": micros(await timed(cached, limiter, admin, n)),
            "tenant_key_cached": micros(await timed(cached, limiter, tenant, n)),
            "tenant_key_cache_miss": micros(await timed(authenticator(0.0), limiter, tenant, n)),
        }
    finally:
        await pool.close()


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pg-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    dsn = asyncio.run(_create_db(args.pg_admin_dsn))
    try:
        checks = asyncio.run(run(dsn, args.n))
    finally:
        asyncio.run(_drop_db(args.pg_admin_dsn, dsn))
    result = {"checks": checks, "cache_ttl_s": 1.0, "machine": machine_info()}
    print(json.dumps(result, indent=2))
    write_result("auth_check", result, args.out_dir)
    return result


if __name__ == "__main__":
    main()
