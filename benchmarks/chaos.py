"""Kill-anything trials: stream LoCoMo conversations in over HTTP and SIGKILL one process per
trial, then check every promise the service makes about what it accepted.

    python -m benchmarks.chaos --trials 50 [--data ../shared/data/locomo-dev]

Each trial is a fresh user: two clients stream one LoCoMo session each (a few turns per
request, message ids the LoCoMo dia_ids, so a retry is the same request); after a random number
of answered requests one process is SIGKILLed: a replica of one group (Ingress, Embedder,
MemoryIndex, IngestWorker, Compressor when deployed), the Serve controller, or the embedded
PostgreSQL. Clients retry a 503 after its Retry-After and a dropped connection after a pause,
like a well-behaved client. After the streams, a flush, and recovery, the trial checks (through
the user's export and search): every message answered 2xx is stored exactly once and
processed, every processed message is cited by a memory, no two memories are the same, each
memory is found by searching its text; and what the clients saw: 5xx other than 503, 503
without Retry-After, requests that hung past the client timeout.

Recovery time: from the kill until /readyz reports every check as before the trial and the
killed group runs as many live processes as before (the killed pid gone).

Prints one JSON summary and a table per fault kind; writes benchmarks/results/chaos.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.common import (
    RESULTS_DIR,
    add_service_args,
    auth_headers,
    cluster_address,
    running_service,
    write_result,
)
from benchmarks.locomo_data import LocomoConversation, load_conversations
from deployments.apps import APP_NAME, index_app

REPLICA_GROUPS = ("Ingress", "Embedder", "MemoryIndex", "IngestWorker", "Compressor")
KINDS = (*REPLICA_GROUPS, "controller", "postgres")


@dataclass
class Seen:
    """What the clients of one trial saw."""

    statuses: Counter = field(default_factory=Counter)
    other_5xx: list[str] = field(default_factory=list)
    no_retry_after: int = 0
    connection_errors: int = 0
    connection_error_kinds: Counter = field(default_factory=Counter)
    hangs: int = 0
    answered_requests: int = 0
    accepted_ids: dict[str, set[str]] = field(default_factory=dict)  # session -> 2xx ids


@dataclass
class Trial:
    number: int
    kind: str
    user: str
    killed_pid: int | None = None
    recovery_s: float | None = None
    seen: Seen = field(default_factory=Seen)
    checks: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict:
        s = self.seen
        return {
            "trial": self.number,
            "kind": self.kind,
            "user": self.user,
            "killed_pid": self.killed_pid,
            "recovery_s": self.recovery_s,
            "statuses": {str(k): v for k, v in sorted(s.statuses.items())},
            "other_5xx": s.other_5xx[:5],
            "other_5xx_count": len(s.other_5xx),
            "no_retry_after": s.no_retry_after,
            "connection_errors": s.connection_errors,
            "connection_error_kinds": dict(s.connection_error_kinds),
            "hangs": s.hangs,
            **self.checks,
        }


# --- processes to kill -------------------------------------------------------------------------


def _alive_actors() -> list:
    from ray.util.state import list_actors

    return list_actors(
        address=cluster_address(), filters=[("state", "=", "ALIVE")], detail=True, limit=10_000
    )


def pids_of(kind: str, pgdata: Path | None) -> list[int]:
    """Live pids of a fault kind's processes."""
    if kind == "postgres":
        pid_file = pgdata / "postmaster.pid" if pgdata else None
        if pid_file is None or not pid_file.exists():
            return []
        return [int(pid_file.read_text().split()[0])]
    app = index_app() if kind == "MemoryIndex" else APP_NAME
    wanted = "ServeController" if kind == "controller" else f"ServeReplica:{app}:{kind}"
    return sorted(a.pid for a in _alive_actors() if a.class_name == wanted and a.pid)


def available_kinds(pgdata: Path | None) -> list[str]:
    return [k for k in KINDS if pids_of(k, pgdata)]


# --- clients -----------------------------------------------------------------------------------


def _messages(conv: LocomoConversation, session_index: int, turns: int) -> tuple[str, list]:
    s = conv.sessions[session_index]
    ts = s.ts.strftime("%Y-%m-%dT%H:%M:%SZ")
    msgs = [
        {"role": "user", "name": t.speaker, "content": t.content, "message_id": t.message_id,
         "timestamp": ts}
        for t in s.turns[:turns]
    ]  # fmt: skip
    return s.session_id, msgs


async def _send(
    client: httpx.AsyncClient, body: dict, seen: Seen, deadline: float, timeout_s: float
) -> httpx.Response:
    """POST until 2xx, retrying 503 (after Retry-After), 5xx and dropped connections."""
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no 2xx for {body.get('session_id')} before the deadline")
        try:
            r = await client.post("/v1/memories", json=body, timeout=timeout_s)
        except httpx.TimeoutException:
            seen.hangs += 1
            continue
        except httpx.TransportError as e:
            seen.connection_errors += 1
            seen.connection_error_kinds[f"{type(e).__name__}: {e}"[:120]] += 1
            await asyncio.sleep(0.5)
            continue
        seen.statuses[r.status_code] += 1
        if r.status_code < 300:
            return r
        if r.status_code == 503:
            retry_after = r.headers.get("retry-after")
            if retry_after is None:
                seen.no_retry_after += 1
            await asyncio.sleep(float(retry_after or 1))
            continue
        if r.status_code >= 500:
            seen.other_5xx.append(f"{r.status_code} {r.text[:200]}")
            await asyncio.sleep(1)
            continue
        raise RuntimeError(f"the service refused a chaos request: {r.status_code} {r.text[:300]}")


async def _stream(
    client: httpx.AsyncClient,
    user: str,
    session: str,
    msgs: list[dict],
    seen: Seen,
    rng: random.Random,
    deadline: float,
    timeout_s: float,
) -> None:
    i = 0
    accepted = seen.accepted_ids.setdefault(session, set())
    while i < len(msgs):
        chunk = msgs[i : i + rng.randint(1, 3)]
        body = {"user_id": user, "session_id": session, "messages": chunk}
        r = await _send(client, body, seen, deadline, timeout_s)
        accepted.update(r.json()["message_ids"])
        seen.answered_requests += 1
        i += len(chunk)
    # End of the stretch: every buffered message must become a memory.
    body = {"user_id": user, "session_id": session, "messages": msgs[-1:], "flush": True}
    await _send(client, body, seen, deadline, timeout_s)


# --- recovery and checks -----------------------------------------------------------------------


async def _readiness(client: httpx.AsyncClient) -> dict[str, bool] | None:
    try:
        r = await client.get("/readyz", timeout=10)
        return {k: bool(v.get("ok")) for k, v in r.json().get("checks", {}).items()}
    except (httpx.HTTPError, ValueError):
        return None


async def _recovered(
    client: httpx.AsyncClient,
    kind: str,
    pgdata: Path | None,
    baseline: dict[str, bool],
    before: list[int],
    killed: int,
    timeout_s: float,
) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        ready = await _readiness(client)
        if ready == baseline:
            pids = await asyncio.to_thread(pids_of, kind, pgdata)
            if killed not in pids and len(pids) >= len(before):
                return round(time.monotonic() - t0, 2)
        await asyncio.sleep(0.25)
    return None


async def _get_json(client: httpx.AsyncClient, path: str, deadline: float, **kw) -> Any:
    """GET (or POST with json=) through a recovering service: retry until 2xx or the deadline."""
    method = "POST" if "json" in kw else "GET"
    while True:
        try:
            r = await client.request(method, path, timeout=30, **kw)
            if r.status_code < 300:
                json_body = r.headers.get("content-type", "").startswith("application/json")
                return r.json() if json_body else r.text
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{method} {path} failed until the deadline")
        await asyncio.sleep(0.5)


async def _wait_processed(
    client: httpx.AsyncClient, user: str, sessions: Sequence[str], deadline: float
) -> None:
    for session in sessions:
        while True:
            body = await _get_json(client, f"/v1/sessions/{session}?user_id={user}", deadline)
            c = body["messages"]
            if c["pending"] == 0 and c["buffered"] == 0:
                break
            if time.monotonic() > deadline:
                return  # what is left unprocessed is counted by the checks
            await asyncio.sleep(0.5)


def check_export(lines: list[dict], accepted: dict[str, set[str]]) -> dict[str, Any]:
    """The promises about stored data, from a user's export."""
    version = lines[0]["memory_version"]
    messages = [ln["data"] for ln in lines if ln["type"] == "message"]
    memories = [
        ln["data"] for ln in lines if ln["type"] == "memory" and ln["data"]["version"] == version
    ]
    stored = Counter((m["session_id"], m["message_id"]) for m in messages)
    wanted = {(s, i) for s, ids in accepted.items() for i in ids}
    done = {(m["session_id"], m["message_id"]) for m in messages if m["status"] == "done"}
    cited = {(e["session_id"], i) for e in memories for i in e["source_message_ids"]}
    same = Counter(
        (e["session_id"], e["kind"], tuple(e["source_message_ids"]), e["text"]) for e in memories
    )
    return {
        "accepted": len(wanted),
        "stored": len(stored),
        "lost": len(wanted - set(stored)),
        "stored_twice": sum(1 for n in stored.values() if n > 1),
        "unexpected": len(set(stored) - wanted),
        "unprocessed": len(wanted - done),
        "uncited": len((wanted & done) - cited),
        "memories": len(memories),
        "duplicated": sum(n - 1 for n in same.values() if n > 1),
    }


async def _check(client: httpx.AsyncClient, trial: Trial, deadline: float) -> None:
    text = await _get_json(client, f"/v1/users/{trial.user}/export", deadline)
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    trial.checks = check_export(lines, trial.seen.accepted_ids)
    version = lines[0]["memory_version"]
    memories = [
        ln["data"] for ln in lines if ln["type"] == "memory" and ln["data"]["version"] == version
    ]
    unfound = 0
    for e in memories:
        body = {"user_id": trial.user, "query": e["text"], "limit": 10,
                "filters": {"session_id": e["session_id"]}}  # fmt: skip
        found = await _get_json(client, "/v1/search", deadline, json=body)
        unfound += e["id"] not in {h["id"] for h in found["results"]}
    trial.checks["unfound"] = unfound


# --- one trial ---------------------------------------------------------------------------------


async def run_trial(
    url: str,
    trial: Trial,
    conv: LocomoConversation,
    pgdata: Path | None,
    rng: random.Random,
    args: argparse.Namespace,
) -> None:
    deadline = time.monotonic() + args.trial_timeout
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, limits=limits, headers=auth_headers()) as client:
        baseline = await _readiness(client)
        picks = rng.sample(range(len(conv.sessions)), 2)
        streams = [_messages(conv, i, args.turns) for i in picks]
        requests = sum(len(m) for _, m in streams) // 2  # about 2 turns per request
        kill_after = rng.randint(1, max(requests - 1, 1))
        seen = trial.seen
        before = await asyncio.to_thread(pids_of, trial.kind, pgdata)

        async def killer() -> None:
            while seen.answered_requests < kill_after:
                await asyncio.sleep(0.02)
            trial.killed_pid = rng.choice(before)
            os.kill(trial.killed_pid, signal.SIGKILL)
            trial.recovery_s = await _recovered(
                client, trial.kind, pgdata, baseline, before, trial.killed_pid,
                args.recovery_timeout,
            )  # fmt: skip

        kill = asyncio.create_task(killer())
        await asyncio.gather(
            *(
                _stream(client, trial.user, s, m, seen, rng, deadline, args.client_timeout)
                for s, m in streams
            )
        )
        if not kill.done() and seen.answered_requests < kill_after:
            seen.answered_requests = kill_after  # the streams ended first: kill now
        await kill
        if trial.recovery_s is None:
            trial.checks = {"recovered": False}
            return
        await _wait_processed(client, trial.user, [s for s, _ in streams], deadline)
        await _check(client, trial, deadline)
        trial.checks["recovered"] = True


# --- the run -----------------------------------------------------------------------------------


def schedule(kinds: Sequence[str], trials: int, rng: random.Random) -> list[str]:
    """Every kind in turn, shuffled per round; PostgreSQL last (the slowest to come back)."""
    out: list[str] = []
    while len(out) < trials:
        round_ = list(kinds)
        rng.shuffle(round_)
        out += round_
    out = out[:trials]
    return sorted(out, key=lambda k: k == "postgres")


def summarize(trials: list[Trial]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for kind in sorted({t.kind for t in trials}):
        ts = [t for t in trials if t.kind == kind]
        rec = [t.recovery_s for t in ts if t.recovery_s is not None]

        def total(key: str, ts: list[Trial] = ts) -> int:
            return sum(int(t.checks.get(key, 0)) for t in ts)

        table[kind] = {
            "trials": len(ts),
            "not_recovered": sum(1 for t in ts if t.recovery_s is None),
            "accepted": total("accepted"),
            "lost": total("lost"),
            "stored_twice": total("stored_twice"),
            "unprocessed": total("unprocessed"),
            "uncited": total("uncited"),
            "duplicated": total("duplicated"),
            "unfound": total("unfound"),
            "non_503_5xx": sum(len(t.seen.other_5xx) for t in ts),
            "503_without_retry_after": sum(t.seen.no_retry_after for t in ts),
            "503": sum(t.seen.statuses.get(503, 0) for t in ts),
            "connection_errors": sum(t.seen.connection_errors for t in ts),
            "hangs": sum(t.seen.hangs for t in ts),
            "recovery_p50_s": round(float(np.percentile(rec, 50)), 2) if rec else None,
            "recovery_max_s": round(max(rec), 2) if rec else None,
        }
    return table


COLUMNS = ("trials", "lost", "duplicated", "stored_twice", "unprocessed", "uncited", "unfound",
           "non_503_5xx", "503", "503_without_retry_after", "connection_errors", "hangs",
           "not_recovered", "recovery_p50_s", "recovery_max_s")  # fmt: skip


def table_text(table: dict[str, dict]) -> str:
    head = "| fault | " + " | ".join(COLUMNS) + " |"
    rule = "|---" * (len(COLUMNS) + 1) + "|"
    rows = [
        f"| {kind} | " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for kind, r in table.items()
    ]
    return "\n".join([head, rule, *rows])


async def run(url: str, pgdata: Path | None, args: argparse.Namespace) -> list[Trial]:
    convs = [c for c in load_conversations(args.data) if len(c.sessions) >= 2]
    rng = random.Random(args.seed)
    kinds = available_kinds(pgdata)
    if args.kinds:
        kinds = [k for k in args.kinds.split(",") if k in kinds]
    run_id = uuid.uuid4().hex[:6]
    trials: list[Trial] = []
    for n, kind in enumerate(schedule(kinds, args.trials, rng)):
        trial = Trial(n, kind, f"chaos-{run_id}-{n}")
        conv = convs[n % len(convs)]
        t0 = time.monotonic()
        try:
            await run_trial(url, trial, conv, pgdata, rng, args)
        except Exception as e:  # a trial that cannot finish is a finding, not a crash
            trial.checks.setdefault("error", f"{type(e).__name__}: {e}"[:500])
        trials.append(trial)
        print(json.dumps({**trial.row(), "wall_s": round(time.monotonic() - t0, 1)}), flush=True)
        if trial.recovery_s is None:
            print(f"{kind}: the service did not recover; stopping the run", flush=True)
            break
    return trials


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--data", default="../shared/data/locomo-dev")
    parser.add_argument("--turns", type=int, default=12, help="turns per session per trial")
    parser.add_argument("--kinds", help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--client-timeout", type=float, default=30.0)
    parser.add_argument("--recovery-timeout", type=float, default=120.0)
    parser.add_argument("--trial-timeout", type=float, default=300.0)
    parser.add_argument("--url", help="an already running service (no PostgreSQL kills)")
    parser.add_argument(
        "--compressor-model", help="LLMLingua-2 weights: deploys the Compressor group too"
    )
    add_service_args(parser)
    args = parser.parse_args(argv)
    t0 = time.monotonic()

    def report(trials: list[Trial]) -> dict:
        table = summarize(trials)
        result = {
            "config": {k: v for k, v in vars(args).items() if k != "out_dir"},
            "wall_s": round(time.monotonic() - t0, 1),
            "by_kind": table,
            "trials": [t.row() for t in trials],
        }
        out = write_result("chaos", result, args.out_dir or RESULTS_DIR)
        print(json.dumps({"by_kind": table, "written": str(out)}, indent=2))
        print(table_text(table), flush=True)
        return result

    if args.url:
        import ray

        ray.init(address="auto", namespace="serve", log_to_driver=False)
        return report(asyncio.run(run(args.url, None, args)))
    env = {"MEMSERVE_WORKER_IDLE_POLL_S": "0.2"}
    if args.compressor_model:
        env["MEMSERVE_COMPRESSOR_MODEL"] = args.compressor_model
    with running_service(pg_admin_dsn=args.pg_admin_dsn, env=env) as svc:
        pgdata = None if args.pg_admin_dsn else (svc.data_dir / "pg")
        try:
            trials = asyncio.run(run(svc.url, pgdata, args))
        except BaseException:
            traceback.print_exc()  # before the cluster goes: Ray may end the process then
            sys.stderr.flush()
            raise
        # Reported before the service stops: a driver can be ended by Ray while it shuts down.
        return report(trials)


if __name__ == "__main__":
    main()
