"""Shared benchmark helpers: percentiles, a private service, an HTTP load generator, plotting.

Every benchmark script prints one JSON summary and writes its JSON and PNG plots under
benchmarks/results/ (or --out-dir). Nothing here asserts a speed: numbers are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from deployments.local_cluster import free_port, free_port_base
from serve_app.security.keys import admin_key_path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
LOCAL_CONFIG = ROOT / "configs" / "local.yaml"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- numbers -----------------------------------------------------------------------------------


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max of latencies in ms (linear interpolation between samples)."""
    if not len(values_ms):
        return {"n": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
    arr = np.asarray(values_ms, dtype=float)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "n": int(arr.size),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "mean": round(float(arr.mean()), 2),
        "max": round(float(arr.max()), 2),
    }


def machine_info() -> dict[str, Any]:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        # A high load average means other work shared the CPUs: the numbers are pessimistic.
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
    }


def write_result(name: str, data: dict, out_dir: Path | None = None) -> Path:
    out = (out_dir or RESULTS_DIR) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    return out


# --- a private service -------------------------------------------------------------------------


def cluster_address() -> str:
    """The GCS address of the cluster this driver joined: the Ray state API needs it when the
    machine runs other clusters too."""
    import ray

    return ray.get_runtime_context().gcs_address


def auth_headers() -> dict[str, str]:
    """The Authorization header for the service under test: MEMSERVE_ADMIN_KEY, else the
    admin.key the service wrote into MEMSERVE_DATA_DIR (./data by default) on its first start."""
    key = os.environ.get("MEMSERVE_ADMIN_KEY")
    if not key:
        data_dir = Path(os.environ.get("MEMSERVE_DATA_DIR", "data"))
        key = admin_key_path(data_dir).read_text().strip()
    return {"Authorization": f"Bearer {key}"}


@dataclass
class RunningService:
    url: str
    service: Any  # deployments.launch.Service
    data_dir: Path
    pg_dsn: str
    start_seconds: float = 0.0

    def client(self, **kw) -> httpx.Client:
        kw.setdefault("timeout", 600)
        return httpx.Client(base_url=self.url, headers=auth_headers(), **kw)

    def reconfigure(self, deployment: str, user_config: dict, timeout_s: float = 120) -> None:
        """Redeploy the app with a new `user_config` for one deployment (applied live through
        `reconfigure`, no replica restart), and wait until it runs again."""
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        from deployments.launch import load_config

        config = load_config(self.service.config_path, self.service.settings)
        for app in config["applications"]:
            for d in app.get("deployments", []):
                if d["name"] == deployment:
                    d["user_config"] = dict(user_config)
        schema = ServeDeploySchema.model_validate(config)
        _get_global_client().deploy_apps(schema, _blocking=False)
        self.service._wait_running([a.name for a in schema.applications], timeout_s)
        # The app reports RUNNING before every replica has applied the new config.
        from ray import serve

        handle = serve.get_deployment_handle(deployment, "memserve")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = handle.info.remote().result()
            if all(info.get(k) == v for k, v in user_config.items()):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{deployment} did not apply {user_config}")


async def _create_db(admin_dsn: str) -> str:
    import asyncpg

    name = f"memserve_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{admin_dsn.rpartition('/')[0]}/{name}"


async def _drop_db(admin_dsn: str, dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rpartition("/")[2]}" WITH (FORCE)')
    finally:
        await conn.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def running_service(
    *,
    config: Path = LOCAL_CONFIG,
    pg_admin_dsn: str | None = None,
    env: dict[str, str] | None = None,
    keep_data: bool = False,
    data_dir: Path | None = None,
) -> Iterator[RunningService]:
    """The real app (configs/local.yaml) on a private Ray cluster, on a fresh data directory
    (or on `data_dir`, which is kept).

    PostgreSQL: embedded under the data directory (what `make serve` uses) unless
    `pg_admin_dsn` names a server, where a throwaway database is created and dropped.
    Stops everything it started and puts the environment back.
    """
    from deployments.launch import Service
    from serve_app.settings import Settings

    if data_dir is not None:
        keep_data = True
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="memserve-bench-"))
    dsn = asyncio.run(_create_db(pg_admin_dsn)) if pg_admin_dsn else None
    port = free_port()
    new_env = {
        "MEMSERVE_DATA_DIR": str(data_dir),
        "MEMSERVE_HTTP_PORT": str(port),
        "MEMSERVE_RAY_PORT_BASE": str(free_port_base()),
        **(env or {}),
    }
    if dsn:
        new_env["MEMSERVE_PG_DSN"] = dsn
    saved = dict(os.environ)
    os.environ.update(new_env)
    if not dsn:
        os.environ.pop("MEMSERVE_PG_DSN", None)
    service = Service(config, Settings())
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        t0 = time.perf_counter()
        service.start()
        started = time.perf_counter() - t0
        # Ray's driver takes over SIGINT; make both signals unwind through the cleanup below.
        if threading.current_thread() is threading.main_thread():
            for sig in handlers:
                signal.signal(sig, _interrupt)
        yield RunningService(
            f"http://127.0.0.1:{port}",
            service,
            data_dir,
            os.environ["MEMSERVE_PG_DSN"],
            round(started, 1),
        )
    finally:
        try:
            service.stop()
        finally:
            if threading.current_thread() is threading.main_thread():
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
            os.environ.clear()
            os.environ.update(saved)
            if dsn and pg_admin_dsn:
                asyncio.run(_drop_db(pg_admin_dsn, dsn))
            if not keep_data:
                shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def use_service(
    shared: RunningService | None, pg_admin_dsn: str | None = None
) -> Iterator[RunningService]:
    """`shared` if given (run_all starts one service for every benchmark), else a fresh one."""
    if shared is not None:
        yield shared
        return
    with running_service(pg_admin_dsn=pg_admin_dsn) as svc:
        yield svc


def add_service_args(parser) -> None:
    parser.add_argument(
        "--pg-admin-dsn",
        help="PostgreSQL server for a throwaway database (default: embedded PostgreSQL)",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)


async def wait_processed(
    client: httpx.AsyncClient,
    sessions: Sequence[tuple[str, str]],
    *,
    stall_s: float = 180,
    poll_s: float = 0.05,
) -> None:
    """Poll GET /v1/sessions until every (user, session) has all its messages processed.

    Gives up when no message got processed for `stall_s` seconds (a stuck pipeline must not
    hang a benchmark run), and on any failed message.
    """
    pending = list(sessions)
    progress, last_change = (0, -1), time.monotonic()
    finished = 0
    while pending:
        user, session = pending[0]
        r = await client.get(f"/v1/sessions/{session}", params={"user_id": user})
        r.raise_for_status()
        c = r.json()["messages"]
        if c["failed"]:
            raise RuntimeError(f"{user}/{session}: {c['failed']} messages failed")
        if c["processed"] >= c["received"]:
            pending.pop(0)
            finished += 1
        now = (finished, c["processed"])
        if now != progress:
            progress, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            raise TimeoutError(
                f"ingestion stalled for {stall_s:.0f}s: {user}/{session} has {c['processed']}"
                f" of {c['received']} messages processed"
            )
        if pending and c["processed"] < c["received"]:
            await asyncio.sleep(poll_s)


# --- HTTP load ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: int = 0
    server_ms: list[float] = field(default_factory=list)  # took_ms reported by the service

    def summary(self) -> dict[str, Any]:
        ok = len(self.latencies_ms)
        return {
            "concurrency": self.concurrency,
            "requests": ok,
            "errors": self.errors,
            "throughput_rps": round(ok / self.wall_s, 1) if self.wall_s else 0.0,
            "latency_ms": percentiles(self.latencies_ms),
            "server_took_ms": percentiles(self.server_ms) if self.server_ms else None,
        }


RequestFactory = Callable[[int], tuple[str, str, dict]]  # i -> (method, path, json body)


async def run_load(
    url: str,
    make_request: RequestFactory,
    *,
    concurrency: int,
    requests: int,
    warmup: int = 0,
    timeout_s: float = 120,
    transport: httpx.AsyncBaseTransport | None = None,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Closed loop: `concurrency` clients, each sends its next request when the last returns,
    until `requests` measured requests are done (after `warmup` unmeasured ones)."""
    result = LoadResult(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url,
        timeout=timeout_s,
        limits=limits,
        transport=transport,
        headers=auth_headers() if headers is None else headers,
    ) as client:

        async def one(i: int, record: bool) -> None:
            method, path, body = make_request(i)
            t0 = time.perf_counter()
            try:
                r = await client.request(method, path, json=body)
            except httpx.HTTPError:
                result.errors += record
                return
            elapsed = (time.perf_counter() - t0) * 1000
            if r.status_code >= 400:
                result.errors += record
                return
            if record:
                result.latencies_ms.append(elapsed)
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    result.server_ms.append(float(r.json()["took_ms"]))

        async def drain(counter: Iterator[int], record: bool) -> None:
            for i in counter:
                await one(i, record)

        warm = iter(range(warmup))
        await asyncio.gather(*(drain(warm, False) for _ in range(concurrency)))
        counter = iter(range(warmup, warmup + requests))
        t0 = time.perf_counter()
        await asyncio.gather(*(drain(counter, True) for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - t0
    return result


# --- in-process embedder -----------------------------------------------------------------------


def load_minilm(torch_threads: int = 2):
    """The service's embedder class, in this process (same model, same encode call)."""
    import torch

    from serve_app.encoding.torch_encoder import Embedder
    from serve_app.settings import DEFAULT_EMBEDDING_MODEL

    torch.set_num_threads(torch_threads)
    return Embedder(DEFAULT_EMBEDDING_MODEL, "cpu", torch_threads)


def encode_throughput(
    encode: Callable[[Sequence[str]], Any],
    texts: Sequence[str],
    batch_sizes: Sequence[int],
    *,
    min_seconds: float = 2.0,
    max_texts: int | None = None,
) -> list[dict[str, Any]]:
    """Texts per second of `encode` at each batch size: consecutive slices of `texts`, at least
    `min_seconds` or one pass (whichever is longer), after one warm-up batch."""
    rows = []
    texts = list(texts[:max_texts] if max_texts else texts)
    for bs in batch_sizes:
        encode(texts[:bs])  # warm-up: first call at a new shape allocates
        done, t0, i = 0, time.perf_counter(), 0
        while True:
            batch = texts[i : i + bs] if i + bs <= len(texts) else texts[:bs]
            i = i + bs if i + bs < len(texts) else 0
            encode(batch)
            done += len(batch)
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds and done >= min(len(texts), bs):
                break
        rows.append(
            {
                "batch_size": bs,
                "texts_per_s": round(done / elapsed, 1),
                "ms_per_batch": round(elapsed * 1000 * bs / done, 2),
            }
        )
    return rows


# --- plotting ----------------------------------------------------------------------------------


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(fig, name: str, out_dir: Path | None = None) -> Path:
    out = (out_dir or RESULTS_DIR) / f"{name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt().close(fig)
    return out


def relpath(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)
