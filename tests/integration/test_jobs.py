"""Offline jobs on the real cluster: consolidation with the scripted engine double, duplicate
merging without an LLM, a killed-and-resumed job, linking, and an embedding rebuild that
switches (and rolls back) while searches run."""

import json
import os
import threading
import time
import uuid
from collections import Counter

import psycopg
import pytest

from jobs import submit
from tests.fixtures.random_models import build_random_sentence_transformer

pytestmark = pytest.mark.integration


def _msg(mid, text, day, name="Alice"):
    return {
        "role": "user",
        "content": text,
        "message_id": mid,
        "name": name,
        "timestamp": f"2023-05-{day:02d}T10:00:00Z",
    }


def _ingest(c, user, sessions: dict[str, list[dict]]) -> None:
    """Add the sessions and wait until every message is a memory (buffers flushed)."""
    from ray import serve

    worker = serve.get_deployment_handle("IngestWorker", app_name="memserve")
    for session, messages in sessions.items():
        r = c.post(
            "/v1/memories",
            json={"user_id": user, "session_id": session, "messages": messages, "flush": True},
        )
        assert r.status_code == 202, r.text
        worker.flush.remote(user, session).result()
    for session, messages in sessions.items():
        deadline = time.monotonic() + 60
        while True:
            counts = c.get(f"/v1/sessions/{session}", params={"user_id": user}).json()["messages"]
            if counts["processed"] == len(messages):
                break
            assert time.monotonic() < deadline, counts
            time.sleep(0.2)


def _settle() -> None:
    """Flush every session of the shared service that still holds unprocessed messages (other
    tests' sessions are otherwise flushed when idle, a minute later) and wait until none is
    left: a switch, and a rollback, requeue what was processed meanwhile, for every user."""
    from ray import serve

    worker = serve.get_deployment_handle("IngestWorker", app_name="memserve")
    unfinished = (
        "SELECT DISTINCT user_id, session_id FROM messages WHERE status IN ('pending', 'buffered')"
    )
    with _pg() as conn:
        for user_id, session_id in conn.execute(unfinished).fetchall():
            worker.flush.remote(user_id, session_id).result()
        deadline = time.monotonic() + 60
        while left := conn.execute(unfinished).fetchall():
            assert time.monotonic() < deadline, left
            time.sleep(0.2)


def _memories(c, user) -> list[dict]:
    r = c.get("/v1/memories", params={"user_id": user, "limit": 500})
    assert r.status_code == 200, r.text
    return r.json()["memories"]


def _wait_job(c, job_id, timeout_s=150) -> dict:
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        r = c.get(f"/v1/jobs/{job_id}")
        body = r.json() if r.status_code == 200 else {}  # 404 until a CLI-started driver runs
        if body.get("status") in ("succeeded", "failed", "stopped"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def _submit_cli(job_id, kind, *args) -> str:
    """What `ray job submit -- python -m jobs.<kind> ...` does."""
    client = submit.client()
    return client.submit_job(
        entrypoint=submit.entrypoint(kind, job_id, None, {}) + " " + " ".join(args),
        runtime_env={"env_vars": {"PYTHONPATH": str(submit.ROOT)}},
        entrypoint_num_cpus=0,
    )


def _stopped_part_way(c, kind, *args) -> tuple[str, dict]:
    """A job started like `ray job submit` and stopped once it has made progress: its id and
    its final row (status `stopped`)."""
    job_id = str(uuid.uuid4())
    sid = _submit_cli(job_id, kind, *args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = c.get(f"/v1/jobs/{job_id}").json() if _job_exists(c, job_id) else {}
        if body.get("done", 0) > 0 and body.get("status") == "running":
            break
        time.sleep(0.1)
    submit.client().stop_job(sid)
    body = _wait_job(c, job_id)
    assert body["status"] == "stopped", body
    return job_id, body


def _pg():
    return psycopg.connect(os.environ["MEMSERVE_PG_DSN"], autocommit=True)


def _memory_index():
    from deployments.apps import memory_index_handle

    return memory_index_handle()


def test_consolidation_with_scripted_engine_double(running, tmp_path):
    user = f"cons-{uuid.uuid4().hex[:6]}"
    rules = {
        "consolidate": [
            {
                "new": "three years old",
                "older": "golden retriever named Max.",
                "action": "update",
                "reason": "same dog, new detail",
                "merged_text": "Alice adopted Max, a golden retriever who is three years old.",
            },
            {"new": "teacher", "older": "nurse", "action": "delete", "reason": "job changed"},
        ]
    }
    rules_path = tmp_path / "rules.json"
    rules_path.write_text(json.dumps(rules))
    with running.client() as c:
        _ingest(
            c,
            user,
            {
                "s1": [
                    _msg("m1", "I adopted a golden retriever named Max.", 1),
                    _msg("m2", "I work as a nurse at the city hospital.", 1),
                ],
                "s2": [
                    _msg("m3", "My favourite food is sushi.", 5),
                    _msg("m4", "My golden retriever Max is three years old now.", 5),
                ],
                "s3": [_msg("m5", "I quit the hospital, now I work as a teacher.", 9)],
            },
        )
        job_id = str(uuid.uuid4())
        _submit_cli(
            job_id, "consolidate", "--user-id", user, "--min-score", "0.2",
            "--decider", f"scripted:{rules_path}",
        )  # fmt: skip
        time.sleep(1)
        job = _wait_job(c, job_id)
        assert job["status"] == "succeeded", job
        assert job["done"] == job["total"] > 0
        assert job["result"]["merged"] == 1 and job["result"]["deleted"] == 1, job["result"]
        assert job["result"]["memories_before"] == 5 and job["result"]["memories_after"] == 3

        by_source = {tuple(m["source_message_ids"]): m for m in _memories(c, user)}
        assert set(by_source) == {("m1", "m4"), ("m3",), ("m5",)}, by_source
        merged = by_source[("m1", "m4")]
        assert merged["memory"] == rules["consolidate"][0]["merged_text"]

        # Re-embedded and re-indexed: the new text is its own nearest vector.
        r = c.post(
            "/v1/search",
            json={"user_id": user, "query": merged["memory"], "strategy": "embedding"},
        )
        top = r.json()["results"][0]
        assert top["id"] == merged["id"] and top["score"] > 0.99, r.json()
        assert _memory_index().count_vectors.remote(user).result() == 3

    with _pg() as conn:
        tombs = conn.execute(
            "SELECT entry->>'text', action, reason, superseded_by::text FROM memory_tombstones"
            " WHERE user_id=%s ORDER BY action",
            (user,),
        ).fetchall()
    assert [(t[1], t[2]) for t in tombs] == [
        ("contradicted", "job changed"),
        ("merged", "same dog, new detail"),
    ]
    assert "nurse" in tombs[0][0] and tombs[0][3] == by_source[("m5",)]["id"]
    assert "named Max." in tombs[1][0] and tombs[1][3] == merged["id"]


def _duplicates_history() -> dict[str, list[dict]]:
    facts = [
        f"I {verb} {thing} every {day}."
        for verb in ("clean", "paint", "visit", "repair")
        for thing in ("the garage", "my bike", "grandma", "the fence", "the boat")
        for day in ("Monday", "Friday")
    ]
    sessions: dict[str, list[dict]] = {}
    n = 0
    for s in range(3):  # every fact three times, in three sessions, the last time shouted
        msgs = []
        for f in facts:
            text = f.upper() if s == 2 else f
            msgs.append(_msg(f"d{n}", text, 1 + 7 * s))
            n += 1
        sessions[f"s{s}"] = msgs
    return sessions


def _outcome(c, user) -> Counter:
    return Counter((m["memory"], tuple(m["source_message_ids"])) for m in _memories(c, user))


def _uninterrupted_outcome(history: dict[str, list[dict]]) -> Counter:
    """What a full run gives (checked in dev runs and by the benchmark): each fact once, as
    its newest copy, citing all three messages oldest first."""
    s0, s1, s2 = (history[f"s{i}"] for i in range(3))
    return Counter(
        (f"[15 May 2023, Monday] Alice: {c['content']}", (a["message_id"], b["message_id"],
                                                          c["message_id"]))
        for a, b, c in zip(s0, s1, s2, strict=True)
    )  # fmt: skip


def test_dedup_without_llm_and_killed_job_resumes_to_same_result(running):
    user = f"dd-{uuid.uuid4().hex[:6]}"
    history = _duplicates_history()
    with running.client() as c:
        _ingest(c, user, history)
        # Started like `ray job submit`, small batches so that it is stopped part-way through.
        job_id, body = _stopped_part_way(
            c, "consolidate", "--user-id", user, "--min-score", "0.5",
            "--batch-size", "4", "--concurrency", "1",
        )  # fmt: skip
        assert body["done"] < body["total"] or body["stage"] != "apply", body

        # Resumed over HTTP: finishes the work it had not done, and nothing twice.
        r = c.post("/v1/jobs", json={"kind": "consolidate", "job_id": job_id})
        assert r.status_code == 202, r.text
        body = _wait_job(c, job_id)
        assert body["status"] == "succeeded", body
        assert body["attempts"] == 2
        assert body["result"]["memories_before"] == 120
        # 40 facts, each said 3 times: exact (and case-only) duplicates merge into one entry.
        assert body["result"]["memories_after"] == 40, body["result"]
        assert _outcome(c, user) == _uninterrupted_outcome(history)
        assert _memory_index().count_vectors.remote(user).result() == 40
    with _pg() as conn:
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT id) FROM memory_tombstones WHERE user_id=%s",
            (user,),
        ).fetchone()
    assert n == distinct == 80


def _job_exists(c, job_id) -> bool:
    return c.get(f"/v1/jobs/{job_id}").status_code == 200


def test_link_job_and_expand_links(running):
    user = f"link-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        _ingest(
            c,
            user,
            {
                "s1": [_msg("k1", "I am training for the Berlin marathon in September.", 1)],
                "s2": [_msg("k2", "My marathon training plan has long runs on Sundays.", 8)],
                "s3": [_msg("k3", "I bought a blue teapot at the flea market.", 15)],
            },
        )
        r = c.post("/v1/jobs", json={"kind": "link", "user_id": user, "min_score": 0.5})
        assert r.status_code == 202, r.text
        job = _wait_job(c, r.json()["id"])
        assert job["status"] == "succeeded" and job["result"]["links"] >= 1, job

        r = c.post(
            "/v1/search",
            json={"user_id": user, "query": "Berlin marathon", "limit": 1, "expand_links": True},
        )
        top = r.json()["results"][0]
        assert "Berlin" in top["memory"]
        linked = top["linked"]
        assert [x["source_message_ids"] for x in linked] == [["k2"]], linked
        assert "marathon" in linked[0]["reason"]
        plain = c.post("/v1/search", json={"user_id": user, "query": "Berlin marathon"}).json()
        assert plain["results"][0]["linked"] is None


def test_rebuild_switches_atomically_under_search_load_and_rolls_back(running, tmp_path):
    model = build_random_sentence_transformer(tmp_path, dim=128)
    user = f"rb-{uuid.uuid4().hex[:6]}"
    errors: list[str] = []
    served = Counter()
    stop = threading.Event()
    with running.client() as c:
        _ingest(c, user, {"s1": [_msg(f"r{i}", f"Fact number {i} about trains.", 2)
                                 for i in range(20)]})  # fmt: skip

        t = _search_loop(running, user, stop, errors, served, "trains", ("embedding", "hybrid"))
        try:
            r = c.post("/v1/jobs", json={"kind": "reembed", "model": str(model)})
            assert r.status_code == 202, r.text
            job = _wait_job(c, r.json()["id"], timeout_s=200)
            assert job["status"] == "succeeded", job
            active = [g for g in job["result"]["generations"] if g["status"] == "active"]
            assert active[0]["model"] == str(model) and active[0]["dim"] == 128
            before = sum(served.values())
            time.sleep(1.0)
            assert sum(served.values()) > before
            ready = c.get("/readyz").json()["checks"]["memory_index"]
            assert ready["index_model"] == str(model)
            # A memory added after the switch is found through the new generation too.
            _ingest(c, user, {"s2": [_msg("late", "A late note about zeppelins.", 3)]})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                hits = c.post(
                    "/v1/search",
                    json={"user_id": user, "query": "A late note about zeppelins.",
                          "strategy": "embedding", "limit": 1},
                ).json()["results"]  # fmt: skip
                if hits and hits[0]["source_message_ids"] == ["late"]:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"late memory not in the new generation: {hits}")
        finally:
            r = c.post("/v1/jobs", json={"kind": "rollback"})
            stop.set()
            t.join(30)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["active"] == 0
        assert c.get("/readyz").json()["checks"]["memory_index"]["index_generation"] == 0
    assert not errors, errors[:5]
    assert served["embedding"] > 5 and served["hybrid"] > 5


# --- re-extraction into a new memory version ----------------------------------------------------


def _active_version(c) -> int:
    return c.get("/readyz").json()["checks"]["memory_index"]["memory_version"]


def _wait_processed(c, user, session, n, timeout_s=60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        counts = c.get(f"/v1/sessions/{session}", params={"user_id": user}).json()["messages"]
        if counts["processed"] == n:
            return
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)


def _search_loop(
    running,
    user,
    stop,
    errors,
    served,
    query="hiking trip",
    strategies=("embedding", "hybrid", "bm25"),
) -> threading.Thread:
    """Searches of every strategy until `stop` is set; failures and empty answers go to
    `errors`, counts per strategy to `served`."""

    def loop():
        with running.client() as sc:
            while not stop.is_set():
                for strategy in strategies:
                    r = sc.post(
                        "/v1/search",
                        json={"user_id": user, "query": query, "strategy": strategy},
                    )
                    if r.status_code != 200 or not r.json()["results"]:
                        errors.append(f"{r.status_code} {r.text[:300]}")
                    served[strategy] += 1

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def test_reextract_with_an_llm_switches_under_search_load_and_rolls_back_in_one_call(
    running, tmp_path
):
    from tests.integration.openai_double import OpenAIDouble

    user = f"rx-{uuid.uuid4().hex[:6]}"
    history = {
        "s1": [_msg(f"a{i}", f"We planned hiking trip number {i} in the Alps.", 3)
               for i in range(8)],
        "s2": [_msg(f"b{i}", f"I bought hiking boots, pair {i}, for the trip.", 6, "Bob")
               for i in range(5)],
    }  # fmt: skip
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Write every durable fact as one sentence. (memserve test prompt v2)")
    double = OpenAIDouble()
    double.start()
    errors: list[str] = []
    served = Counter()
    stop = threading.Event()
    with running.client() as c:
        _settle()
        _ingest(c, user, history)
        before_version = _active_version(c)
        before = _memories(c, user)
        assert {m["kind"] for m in before} == {"message"} and len(before) == 13
        t = _search_loop(running, user, stop, errors, served)
        try:
            # Started like `ray job submit -- python -m jobs.reextract ...`.
            job_id = str(uuid.uuid4())
            _submit_cli(
                job_id, "reextract", "--llm-base-url", double.base_url, "--llm-model", "double",
                "--prompt-file", str(prompt),
            )  # fmt: skip
            time.sleep(1)
            job = _wait_job(c, job_id, timeout_s=240)
            assert job["status"] == "succeeded", job
            res = job["result"]
            version = res["memory_version"]
            assert version > before_version and res["activated"], res
            assert res["llm_calls"] >= 2 and res["session_failures"] == 0
            assert res["worker_note"] and "LLM" in res["worker_note"]  # the worker is extractive
            assert _active_version(c) == version
            assert prompt.read_text() in double.system_prompts
            gens = c.get("/v1/generations").json()["generations"]
            [active] = [g for g in gens if g["status"] == "active"]
            assert active["memory_version"] == version
            assert active["extraction"]["llm"][0]["model"] == "double"
            assert active["extraction"]["compress_rate"] == 0.6  # the service's rate

            # Only the new version is served: LLM facts and topic summaries, real provenance.
            after = _memories(c, user)
            assert {m["kind"] for m in after} == {"fact", "summary"}
            ids = {m["message_id"] for ms in history.values() for m in ms}
            facts = [m for m in after if m["kind"] == "fact"]
            assert sorted(i for m in facts for i in m["source_message_ids"]) == sorted(ids)
            assert not {m["id"] for m in after} & {m["id"] for m in before}
            new_ids = {m["id"] for m in after}
            for strategy in ("hybrid", "embedding", "bm25"):
                hits = c.post(
                    "/v1/search",
                    json={"user_id": user, "query": "hiking boots", "strategy": strategy},
                ).json()["results"]
                assert hits and {h["id"] for h in hits} <= new_ids, (strategy, hits)
                assert all(set(h["source_message_ids"]) <= ids for h in hits)

            # A message that arrives after the switch becomes a memory of the new version.
            _ingest(c, user, {"s3": [_msg("late1", "Carol joins the hiking trip late.", 9)]})
            late = [m for m in _memories(c, user) if m["source_message_ids"] == ["late1"]]
            assert late and late[0]["id"] not in {m["id"] for m in before}

            # Rollback: one call; the old memories come back, and the late message (which the
            # old version never saw) is queued and written into it: nothing goes missing.
            r = c.post("/v1/jobs", json={"kind": "rollback"})
            assert r.status_code == 200, r.text
            body = r.json()["result"]
            assert body["memory_version"] == before_version
            assert body["requeued"] == {"messages": 1, "tasks": 1}
            assert _active_version(c) == before_version
            _wait_processed(c, user, "s3", 1)
            restored = _memories(c, user)
            assert {m["id"] for m in before} < {m["id"] for m in restored}
            [late] = [m for m in restored if m["id"] not in {m["id"] for m in before}]
            assert late["source_message_ids"] == ["late1"] and late["kind"] == "message"
        finally:
            stop.set()
            t.join(30)
            double.stop()
    assert not errors, errors[:5]
    assert min(served.values()) > 3, served


def _version_rows(version: int) -> Counter:
    with _pg() as conn:
        rows = conn.execute(
            "SELECT user_id, session_id, kind, text, index_text, source_message_ids"
            " FROM memory_entries WHERE version=%s",
            (version,),
        ).fetchall()
    return Counter((*r[:5], tuple(r[5])) for r in rows)


def _uninterrupted_message_entries() -> Counter:
    """What an uninterrupted extractive run with one entry per message writes: each done
    message once, built by the same function from the stored messages (with this unit the
    entries do not depend on how sessions are segmented)."""
    from serve_app.model.messages import StoredMessage
    from serve_app.pipeline.extractive import build_entries

    with _pg() as conn:
        rows = conn.execute(
            "SELECT user_id, session_id, message_id, seq, role, name, content, ts FROM messages"
            " WHERE status='done' ORDER BY user_id, session_id, seq"
        ).fetchall()
    out: Counter = Counter()
    for r in rows:
        m = StoredMessage(*r)
        for d in build_entries([m], None, unit="message"):
            out[(m.user_id, m.session_id, "message", d.text, d.index_text,
                 tuple(d.source_message_ids))] += 1  # fmt: skip
    return out


def test_reextract_killed_and_resumed_ends_like_an_uninterrupted_run(running):
    user = f"rk-{uuid.uuid4().hex[:6]}"
    with running.client() as c:
        # Many small sessions: the job works per session, so it is stopped part-way through.
        _ingest(c, user, {f"s{s}": [_msg(f"k{s}-{i}", f"Session {s} remark {i}.", 1 + s)
                                    for i in range(2)] for s in range(10)})  # fmt: skip
        # What the service cannot do is refused up front.
        for bad in (
            {"kind": "reextract", "llm_model": "other"},  # this service has no LLM endpoint
            {"kind": "reextract", "user_id": user},  # a version covers every user
            {"kind": "reextract", "no_llm": True, "compress_rate": 2},
        ):
            r = c.post("/v1/jobs", json=bad)
            assert r.status_code == 422, (bad, r.text)

        job_id, body = _stopped_part_way(
            c, "reextract", "--no-llm", "--entry-unit", "message", "--no-compress",
            "--no-activate", "--batch-size", "1",
        )  # fmt: skip
        assert body["done"] < body["total"], body

        # Resumed over HTTP with the same id (the job's own parameters): it finishes what was
        # left, and writes nothing twice.
        r = c.post("/v1/jobs", json={"kind": "reextract", "job_id": job_id})
        assert r.status_code == 202, r.text
        resumed = _wait_job(c, job_id, timeout_s=200)
        assert resumed["status"] == "succeeded" and resumed["attempts"] == 2, resumed
        res = resumed["result"]
        assert not res["activated"] and res["extraction"]["compress_rate"] is None
        rows = _version_rows(res["memory_version"])
        assert res["entries"] == sum(rows.values())
        assert rows == _uninterrupted_message_entries()
        assert len([k for k in rows if k[0] == user]) == 20
        # Every entry of the version has its vector in the generation, none twice.
        gen = res["generation"]
        assert _memory_index().generation_missing.remote(gen).result() == 0
        with _pg() as conn:
            members = conn.execute(
                "SELECT count(*) FROM generation_members WHERE generation=%s", (gen,)
            ).fetchone()[0]
        assert members == res["entries"]
        gens = c.get("/v1/generations").json()["generations"]
        assert [g["status"] for g in gens if g["generation"] == gen] == ["building"]
