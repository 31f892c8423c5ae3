"""Soak: 16 clients run mixed adds, searches, lists, edits and deletes for M minutes.

    python -m benchmarks.soak --minutes 10 [--clients 16] [--data ../shared/data/locomo-dev]

Each client is one user streaming a LoCoMo conversation (turns as messages, questions as
queries): per request it adds the next turns (45 %), searches (35 %), lists its memories
(10 %), edits one of them (5 %) or deletes one (5 %); edits and deletes pick from what its last
list returned and was not deleted since. A client whose conversation is used up erases its user
(`DELETE /v1/users/{id}`) and streams it again as a new user, so adds go on for the whole run
and the stored data stays bounded: memory that keeps growing is a leak. Every answer other than
2xx is an error (there must be none). Reports per time window the p50/p95 latency of each
operation, and every replica's resident memory (RSS of the actor's pid, sampled through the Ray
state API and psutil) at each window, all of it and its anonymous part (without file-backed
pages), with the growth of each over the second half of the run (no leak: flat).

Prints one JSON summary; writes benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from benchmarks.common import (
    RESULTS_DIR,
    add_service_args,
    auth_headers,
    cluster_address,
    machine_info,
    percentiles,
    running_service,
    write_result,
)
from benchmarks.locomo_data import LocomoConversation, load_conversations

OPS = (("add", 0.45), ("search", 0.35), ("list", 0.10), ("edit", 0.05), ("delete", 0.05))


@dataclass
class Log:
    window_s: float
    t0: float = field(default_factory=time.monotonic)
    # window -> op -> latencies (ms)
    latencies: dict[int, dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    errors: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, op: str, started: float, r: httpx.Response | None, err: str = "") -> None:
        w = int((started - self.t0) // self.window_s)
        self.counts[op] += 1
        if r is not None and r.status_code < 300:
            self.latencies[w][op].append((time.monotonic() - started) * 1000)
        else:
            detail = f"{r.status_code} {r.text[:200]}" if r is not None else err
            self.errors.append(f"{op}: {detail}")


class Client:
    def __init__(self, n: int, conv: LocomoConversation, rng: random.Random, run_id: str) -> None:
        self.name = f"soak-{run_id}-{n}"
        self.round = 0
        self.user = self.name
        self.rng = rng
        self.turns = [(s, t) for s in conv.sessions for t in s.turns]
        self.questions = [q.question for q in conv.questions] or [t.content for _, t in self.turns]
        self.next_turn = 0
        self.known: list[str] = []  # memory ids from the last list, minus deleted ones

    def pick(self) -> str:
        if self.next_turn == 0:
            return "add"  # the user exists from the first add on
        op = self.rng.choices([o for o, _ in OPS], [w for _, w in OPS])[0]
        if op in ("edit", "delete") and not self.known:
            return "list"
        if op == "add" and self.next_turn >= len(self.turns):
            return "erase"
        return op

    async def step(self, c: httpx.AsyncClient, log: Log) -> None:
        op = self.pick()
        started = time.monotonic()
        try:
            r = await self._request(c, op)
        except Exception as e:  # counted as an error, and the run goes on
            log.record(op, started, None, f"{type(e).__name__}: {e}")
            return
        log.record(op, started, r)
        if r.status_code >= 300:
            return
        if op == "list":
            self.known = [m["id"] for m in r.json()["memories"]]
        elif op == "erase":
            self.round += 1
            self.user = f"{self.name}-r{self.round}"
            self.next_turn, self.known = 0, []

    async def _request(self, c: httpx.AsyncClient, op: str) -> httpx.Response:
        if op == "add":
            n = self.rng.randint(1, 4)
            batch = self.turns[self.next_turn : self.next_turn + n]
            self.next_turn += len(batch)
            session = batch[0][0]
            msgs = [
                {"role": "user", "name": t.speaker, "content": t.content,
                 "message_id": t.message_id, "timestamp": session.ts.isoformat()}
                for s, t in batch
                if s.session_id == session.session_id
            ]  # fmt: skip
            return await c.post(
                "/v1/memories",
                json={"user_id": self.user, "session_id": session.session_id, "messages": msgs},
            )
        if op == "erase":
            return await c.delete(f"/v1/users/{self.user}")
        if op == "search":
            q = self.rng.choice(self.questions)
            return await c.post("/v1/search", json={"user_id": self.user, "query": q, "limit": 10})
        if op == "list":
            return await c.get("/v1/memories", params={"user_id": self.user, "limit": 50})
        mid = self.rng.choice(self.known)
        if op == "edit":
            return await c.patch(
                f"/v1/memories/{mid}",
                params={"user_id": self.user},
                json={"memory": f"edited at {time.time():.0f}: " + self.rng.choice(self.questions)},
            )
        self.known.remove(mid)
        return await c.delete(f"/v1/memories/{mid}", params={"user_id": self.user})


def replica_memory() -> tuple[dict[str, float], dict[str, float]]:
    """Resident memory (MB) of every live Serve actor, by actor name (replica id): all of it
    (RSS), and its anonymous part (RSS less file-backed pages: heap and anonymous maps, what a
    leak grows; file-backed pages, such as loaded libraries or the vector store's memory-mapped
    segments, are the page cache's to drop). ({}, {}) when the state API does not answer (a
    sample missed, not a failed run)."""
    from ray.util.state import list_actors

    rss: dict[str, float] = {}
    anon: dict[str, float] = {}
    try:
        actors = list_actors(
            address=cluster_address(), filters=[("state", "=", "ALIVE")], detail=True, limit=10_000
        )
    except Exception as e:
        print(f"soak: no memory sample ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
        return {}, {}
    for a in actors:
        if not a.pid or not (a.class_name.startswith("ServeReplica") or "Serve" in a.class_name):
            continue
        try:
            info = psutil.Process(a.pid).memory_info()
        except psutil.Error:
            continue
        name = f"{a.class_name.rpartition(':')[2]}#{a.pid}"
        rss[name] = round(info.rss / 2**20, 1)
        anon[name] = round((info.rss - info.shared) / 2**20, 1)
    return rss, anon


def sample_memory(t0: float, rss_out: list[dict], anon_out: list[dict]) -> None:
    rss, anon = replica_memory()
    t = round(time.monotonic() - t0, 1)
    rss_out.append({"t_s": t, **rss})
    anon_out.append({"t_s": t, **anon})


async def _sampler(log: Log, stop: asyncio.Event, rss: list[dict], anon: list[dict]) -> None:
    while not stop.is_set():
        await asyncio.to_thread(sample_memory, log.t0, rss, anon)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=log.window_s)


def memory_report(samples: list[dict]) -> dict[str, dict]:
    """Per replica: RSS first, last, max, and the growth over the second half (MB)."""
    names = sorted({k for s in samples for k in s if k != "t_s"})
    half = samples[len(samples) // 2 :]
    out = {}
    for name in names:
        series = [s[name] for s in samples if name in s]
        second = [s[name] for s in half if name in s]
        out[name] = {
            "first_mb": series[0],
            "last_mb": series[-1],
            "max_mb": max(series),
            "second_half_growth_mb": round(second[-1] - second[0], 1) if second else None,
        }
    return out


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    convs = load_conversations(args.data)
    rng = random.Random(args.seed)
    run_id = f"{rng.randrange(16**6):06x}"
    clients = [
        Client(n, convs[n % len(convs)], random.Random(args.seed + n), run_id)
        for n in range(args.clients)
    ]
    log = Log(window_s=args.window_s)
    stop = asyncio.Event()
    samples: list[dict] = []
    anon_samples: list[dict] = []
    end = log.t0 + args.minutes * 60
    limits = httpx.Limits(max_connections=args.clients + 4)
    async with httpx.AsyncClient(
        base_url=url, timeout=args.client_timeout, limits=limits, headers=auth_headers()
    ) as c:

        async def loop(client: Client) -> None:
            while time.monotonic() < end:
                await client.step(c, log)

        sampler = asyncio.create_task(_sampler(log, stop, samples, anon_samples))
        await asyncio.gather(*(loop(cl) for cl in clients))
        stop.set()
        await sampler
    sample_memory(log.t0, samples, anon_samples)
    windows = [
        {
            "window": w,
            "from_s": w * args.window_s,
            **{op: percentiles(v) for op, v in sorted(ops.items())},
        }
        for w, ops in sorted(log.latencies.items())
    ]
    overall: dict[str, list[float]] = defaultdict(list)
    for ops in log.latencies.values():
        for op, v in ops.items():
            overall[op] += v
    return {
        "requests": dict(log.counts),
        "errors": len(log.errors),
        "error_samples": log.errors[:20],
        "latency_ms": {op: percentiles(v) for op, v in sorted(overall.items())},
        "windows": windows,
        "memory": memory_report(samples),
        "memory_anon": memory_report(anon_samples),
        "memory_samples": samples,
        "memory_anon_samples": anon_samples,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--window-s", type=float, default=30)
    parser.add_argument("--client-timeout", type=float, default=60)
    parser.add_argument("--data", default="../shared/data/locomo-dev")
    parser.add_argument("--seed", type=int, default=11)
    add_service_args(parser)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    with running_service(pg_admin_dsn=args.pg_admin_dsn) as svc:
        try:
            body = asyncio.run(run(svc.url, args))
        except BaseException:
            traceback.print_exc()  # before the cluster goes: Ray may end the process then
            sys.stderr.flush()
            raise
        # Written before the service stops: a driver can be ended by Ray while it shuts down.
        result = {
            "config": {k: v for k, v in vars(args).items() if k != "out_dir"},
            "machine": machine_info(),
            "wall_s": round(time.monotonic() - t0, 1),
            **body,
        }
        out = write_result("soak", result, args.out_dir or RESULTS_DIR)
        summary = {k: result[k] for k in ("requests", "errors", "latency_ms", "memory")}
        print(json.dumps({**summary, "written": str(out)}, indent=2), flush=True)
    return result


if __name__ == "__main__":
    main()
