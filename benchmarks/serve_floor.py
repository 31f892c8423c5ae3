"""The floor of the HTTP path on this machine: what Ray Serve costs before memserve does any work.

    python -m benchmarks.serve_floor [--requests 300]

A private Ray cluster serves a FastAPI ingress (`@serve.ingress`, like memserve's) with two
routes: /echo answers at once; /hop makes one DeploymentHandle call to a second deployment that
answers at once (memserve's search makes two: ingress -> memory index -> embedder). Closed-loop
clients at 1 and 8 concurrent: p50/p95 and requests/s. Any memserve search latency is this
plus the search itself. Prints JSON, writes benchmarks/results/serve_floor.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import ray
from fastapi import FastAPI
from ray import serve

from benchmarks.common import (
    add_service_args,
    free_port,
    free_port_block,
    machine_info,
    percentiles,
    write_result,
)
from deployments.local_cluster import LocalRayCluster

app = FastAPI()


@serve.deployment(max_ongoing_requests=100)
class Back:
    async def work(self, q: str) -> dict:
        return {"q": q}


@serve.deployment(max_ongoing_requests=100)
@serve.ingress(app)
class Front:
    def __init__(self, back) -> None:
        self.back = back

    @app.post("/echo")
    async def echo(self, body: dict) -> dict:
        return {"ok": 1}

    @app.post("/hop")
    async def hop(self, body: dict) -> dict:
        return await self.back.work.remote(body.get("q", ""))


async def closed_loop(url: str, path: str, clients: int, n: int) -> dict:
    lat: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        for _ in range(10):  # warm-up
            (await c.post(path, json={"q": "x"})).raise_for_status()
        todo = iter(range(n))

        async def client() -> None:
            for _ in todo:
                t = time.perf_counter()
                (await c.post(path, json={"q": "hello"})).raise_for_status()
                lat.append((time.perf_counter() - t) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {
        "route": path,
        "clients": clients,
        "requests": n,
        "throughput_rps": round(n / elapsed, 1),
        "latency_ms": percentiles(lat),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", default="1,8")
    add_service_args(p)
    args = p.parse_args(argv)
    port = free_port()
    cluster = LocalRayCluster(free_port_block(), 4)
    rows = []
    try:
        ray.init(address=cluster.start(), log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Front.bind(Back.bind()), name="floor", route_prefix="/")
        for path in ("/echo", "/hop"):
            for clients in (int(x) for x in args.concurrency.split(",")):
                row = asyncio.run(
                    closed_loop(f"http://127.0.0.1:{port}", path, clients, args.requests)
                )
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        try:
            serve.shutdown()
            ray.shutdown()
        finally:
            cluster.stop()
    result = {"benchmark": "serve_floor", "machine": machine_info(), "rows": rows}
    result["json"] = str(write_result("serve_floor", result, args.out_dir))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
