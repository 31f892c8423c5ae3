"""The `memserve` command line: the HTTP API from a shell, the stdio MCP server, and the exports
that point Ray's CLIs at the local cluster.

Human-readable output by default, `--json` for scripts. Exit codes: 0 ok, 1 server or other
error, 2 bad usage or invalid input, 3 not found, 4 missing or refused API key, 5 service
unreachable, 6 rate limited.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel

from memserve import __version__, cluster_env
from memserve.client import MemoryClient
from memserve.errors import (
    ConnectionFailed,
    Forbidden,
    InvalidRequest,
    MemserveError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from memserve.models import Memory, ScoredMemory, SessionStatus

OK, ERROR, USAGE, NOT_FOUND, AUTH, UNREACHABLE, RATE_LIMITED = 0, 1, 2, 3, 4, 5, 6


def exit_code(e: MemserveError) -> int:
    if isinstance(e, NotFound):
        return NOT_FOUND
    if isinstance(e, Unauthorized | Forbidden):
        return AUTH
    if isinstance(e, InvalidRequest | PayloadTooLarge):
        return USAGE
    if isinstance(e, ConnectionFailed):
        return UNREACHABLE
    if isinstance(e, RateLimited):
        return RATE_LIMITED
    return ERROR


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, value: Any, human: Callable[[], Iterable[str]]) -> None:
        if self.as_json:
            print(json.dumps(_jsonable(value), indent=2, ensure_ascii=False))
        else:
            for line in human():
                print(line)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _short(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _memory_line(m: Memory, rank: int | None = None) -> str:
    score = f"{m.score:6.3f}  " if isinstance(m, ScoredMemory) else ""
    head = f"{rank:>3}. " if rank is not None else ""
    return (
        f"{head}{score}{m.timestamp:%Y-%m-%d %H:%M}  [{m.session_id}]  {_short(m.memory)}  ({m.id})"
    )


def _memory_block(m: Memory) -> list[str]:
    lines = [
        f"id:        {m.id}",
        f"memory:    {m.memory}",
        f"timestamp: {m.timestamp.isoformat()}",
        f"session:   {m.session_id}",
        f"speaker:   {m.speaker or '-'}",
        f"kind:      {m.kind}",
        f"sources:   {', '.join(m.source_message_ids) or '-'}",
    ]
    if m.importance is not None:
        lines.append(f"importance: {m.importance}")
    if m.metadata:
        lines.append(f"metadata:  {json.dumps(m.metadata, ensure_ascii=False)}")
    return lines


def _session_lines(st: SessionStatus) -> list[str]:
    c = st.messages
    lines = [
        f"session {st.session_id} of {st.user_id}",
        f"messages: {c.received} received, {c.processed} processed, {c.pending} pending,"
        f" {c.buffered} buffered, {c.failed} failed",
        f"memories: {st.memories}",
        f"tokens:   {st.tokens.raw} raw, {st.tokens.llm_calls} LLM calls",
    ]
    if st.summary:
        lines.append(f"summary:  {st.summary}")
    return lines


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# commands -------------------------------------------------------------------------------------


def cmd_add(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    if a.file:
        with sys.stdin if a.file == "-" else open(a.file) as f:
            messages = json.load(f)
        if isinstance(messages, dict):
            messages = messages.get("messages", messages)
        if not isinstance(messages, list):
            raise InvalidRequest("the file holds no list of messages", code="invalid_request")
    elif a.text:
        message: dict[str, Any] = {"role": a.role, "content": " ".join(a.text)}
        for key in ("name", "timestamp", "message_id"):
            if getattr(a, key):
                message[key] = getattr(a, key)
        messages = [message]
    else:
        print("memserve add: give the message text or --file", file=sys.stderr)
        return USAGE
    res = c.add(
        messages,
        user_id=a.user,
        session_id=a.session,
        metadata=a.metadata,
        wait=a.wait,
        flush=a.flush,
    )

    def human() -> list[str]:
        state = (
            "searchable"
            if a.wait and not res.pending
            else f"{res.pending} not yet searchable"
            if a.wait
            else "queued"
        )
        return [
            f"stored {res.accepted} of {len(res.message_ids)} message(s) in session"
            f" {res.session_id} ({state}); ids: {', '.join(res.message_ids)}"
        ]

    out.emit(res, human)
    return OK


def cmd_search(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    filters = {
        "session_id": a.session,
        "time_from": a.time_from,
        "time_to": a.time_to,
        "speaker": a.speaker,
    }
    res = c.search(
        " ".join(a.query),
        user_id=a.user,
        limit=a.limit,
        filters={k: v for k, v in filters.items() if v is not None} or None,
        strategy=a.strategy,
        expand_links=a.expand_links,
    )

    def human() -> list[str]:
        if not res.results:
            return ["no memories match"]
        lines = []
        for i, m in enumerate(res.results, 1):
            lines.append(_memory_line(m, i))
            lines.extend(
                f"        linked ({x.reason}): {_short(x.memory, 80)}" for x in m.linked or []
            )
        return lines

    out.emit(res, human)
    return OK


def cmd_ls(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    memories = []
    for m in c.list(user_id=a.user, session_id=a.session, page_size=min(a.limit or 500, 500)):
        memories.append(m)
        if a.limit and len(memories) >= a.limit:
            break
    out.emit(memories, lambda: [_memory_line(m) for m in memories] or ["no memories"])
    return OK


def cmd_get(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    m = c.get(a.memory_id, user_id=a.user)
    out.emit(m, lambda: _memory_block(m))
    return OK


def cmd_update(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    m = c.update(
        a.memory_id,
        user_id=a.user,
        memory=a.memory,
        metadata=a.metadata,
        importance=a.importance,
    )
    out.emit(m, lambda: _memory_block(m))
    return OK


def cmd_rm(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    for memory_id in a.memory_ids:
        d = c.delete(memory_id, user_id=a.user)
        out.emit(d, lambda d=d: [f"deleted memory {d.id}"])
    return OK


def cmd_erase_user(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    if not a.yes:
        print(
            f"memserve erase-user: this erases every message and memory of {a.user_id!r};"
            " add --yes to go ahead",
            file=sys.stderr,
        )
        return USAGE
    d = c.delete_user(a.user_id)
    out.emit(d, lambda: [f"erased user {d.id}"])
    return OK


def cmd_session(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    actions = {"flush": c.flush, "summary": c.summarize, "retry": c.retry_failed}
    if a.action:
        res = actions[a.action](a.session_id, user_id=a.user)
        out.emit(res, lambda: [f"{a.action}: {json.dumps(res.model_dump())}"])
        return OK
    st = c.session(a.session_id, user_id=a.user)
    out.emit(st, lambda: _session_lines(st))
    return OK


def cmd_jobs(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    if a.jobs_cmd == "generations":
        g = c.generations()
        out.emit(g, lambda: json.dumps(g.model_dump(), indent=2).splitlines())
        return OK
    if a.jobs_cmd == "start":
        job = c.start_job(a.kind, user_id=a.user, job_id=a.job_id, **dict(a.param or []))
    else:
        job = c.job(a.job_id)

    def human() -> list[str]:
        eta = f", eta {job.eta_s:.0f}s" if job.eta_s is not None else ""
        lines = [
            f"job {job.id} ({job.kind}{', user ' + job.user_id if job.user_id else ''}):"
            f" {job.status}{' / ' + job.stage if job.stage else ''}, {job.done}/{job.total}{eta}"
        ]
        if job.error:
            lines.append(f"error: {job.error}")
        return lines

    out.emit(job, human)
    return OK


def cmd_keys(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    if a.keys_cmd == "create":
        k = c.create_key(a.tenant, a.name, expires_at=a.expires_at, rate_limit_per_min=a.rate_limit)
        out.emit(k, lambda: [f"key {k.id} for {k.tenant} ({k.name}); shown once:", k.key])
    elif a.keys_cmd == "ls":
        keys = c.list_keys(a.tenant)
        out.emit(
            keys,
            lambda: (
                [
                    f"{k.id}  {k.tenant}  {k.name}  created {k.created_at or '-'}"
                    f"  expires {k.expires_at or 'never'}"
                    for k in keys
                ]
                or ["no keys"]
            ),
        )
    else:
        k = c.revoke_key(a.key_id)
        out.emit(k, lambda: [f"revoked key {k.id} ({k.tenant}, {k.name})"])
    return OK


def cmd_audit(c: MemoryClient, a: argparse.Namespace, out: Output) -> int:
    page = c.audit(user_id=a.user, since=a.since, limit=a.limit)
    out.emit(
        page,
        lambda: (
            [json.dumps(e.model_dump(mode="json"), ensure_ascii=False) for e in page.events]
            or ["no events"]
        ),
    )
    return OK


def cmd_env(a: argparse.Namespace) -> int:
    directory = cluster_env.data_dir(a.data_dir)
    exports = cluster_env.read(directory)
    if exports is None:
        print(
            f"memserve env: no running cluster recorded under {directory} (start one with"
            " `make serve`, or give --data-dir / MEMSERVE_DATA_DIR)",
            file=sys.stderr,
        )
        return NOT_FOUND
    if a.json:
        print(json.dumps(exports, indent=2))
    else:
        sys.stdout.write(cluster_env.shell_lines(exports))
    return OK


def cmd_mcp(a: argparse.Namespace) -> int:
    try:
        from memserve import mcp_server
    except ImportError as e:
        print(
            f"memserve mcp needs the MCP SDK ({e}): pip install 'memserve-sdk[mcp]'",
            file=sys.stderr,
        )
        return ERROR
    mcp_server.run_stdio(url=a.url, api_key=a.api_key, user_id=a.default_user)
    return OK


# parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url", help="service URL (default: $MEMSERVE_URL or http://127.0.0.1:8000)"
    )
    common.add_argument("--api-key", help="API key (default: $MEMSERVE_API_KEY)")
    common.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    common.add_argument("--timeout", type=float, default=120.0, help="seconds per request")

    p = argparse.ArgumentParser(
        prog="memserve",
        description="memserve's command line: long-term memory for LLM agents.",
        epilog="Exit codes: 0 ok, 1 error, 2 usage or invalid input, 3 not found, 4 API key"
        " missing or refused, 5 service unreachable, 6 rate limited.",
    )
    p.add_argument("--version", action="version", version=f"memserve {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help: str, fn: Callable[..., int], options: bool = True
    ) -> argparse.ArgumentParser:
        # Commands with subcommands take the options on the subcommand (argparse would let the
        # subcommand's defaults overwrite options given before it).
        sp = sub.add_parser(name, help=help, description=help, parents=[common] if options else [])
        sp.set_defaults(fn=fn)
        return sp

    def user(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--user", "-u", required=True, help="user id")

    sp = command("add", "store messages (one from the arguments, or a JSON list)", cmd_add)
    user(sp)
    sp.add_argument("text", nargs="*", help="the message text")
    sp.add_argument("--session", "-s", help="session id (default: 'default')")
    sp.add_argument("--role", default="user", choices=("user", "assistant", "system", "tool"))
    sp.add_argument("--name", help="speaker name")
    sp.add_argument("--timestamp", help="ISO 8601 or '2023/05/20 (Sat) 10:00'")
    sp.add_argument("--message-id", help="id of the message (default: a new UUID)")
    sp.add_argument("--file", "-f", help="JSON file with a list of messages ('-': stdin)")
    sp.add_argument("--metadata", type=_json_arg, help="JSON object stored with the messages")
    sp.add_argument("--wait", action="store_true", help="answer once searchable")
    sp.add_argument("--flush", action="store_true", help="end the session's stretch now")

    sp = command("search", "search a user's memories", cmd_search)
    user(sp)
    sp.add_argument("query", nargs="+")
    sp.add_argument("--limit", "-n", type=int)
    sp.add_argument("--session", "-s")
    sp.add_argument("--from", dest="time_from", help="only memories at or after this time")
    sp.add_argument("--to", dest="time_to", help="only memories at or before this time")
    sp.add_argument("--speaker")
    sp.add_argument("--strategy", choices=("hybrid", "embedding", "bm25"))
    sp.add_argument("--expand-links", action="store_true")

    sp = command("ls", "list a user's memories, oldest first", cmd_ls)
    user(sp)
    sp.add_argument("--session", "-s")
    sp.add_argument("--limit", "-n", type=int, help="at most this many")

    sp = command("get", "show one memory", cmd_get)
    user(sp)
    sp.add_argument("memory_id")

    sp = command("update", "change a memory's text, metadata or importance", cmd_update)
    user(sp)
    sp.add_argument("memory_id")
    sp.add_argument("--memory", help="new text")
    sp.add_argument("--metadata", type=_json_arg)
    sp.add_argument("--importance", type=float)

    sp = command("rm", "delete memories", cmd_rm)
    user(sp)
    sp.add_argument("memory_ids", nargs="+", metavar="memory_id")

    sp = command("erase-user", "erase everything of a user in both stores", cmd_erase_user)
    sp.add_argument("user_id")
    sp.add_argument("--yes", action="store_true", help="really erase")

    sp = command("session", "a session's status, or flush / summary / retry", cmd_session)
    user(sp)
    sp.add_argument("session_id")
    sp.add_argument("action", nargs="?", choices=("flush", "summary", "retry"))

    sp = command("jobs", "offline jobs and index generations", cmd_jobs, options=False)
    jobs = sp.add_subparsers(dest="jobs_cmd", required=True, metavar="start|status|generations")
    js = jobs.add_parser("start", help="start (or resume with --job-id) a job", parents=[common])
    js.add_argument("kind", choices=("consolidate", "link", "reembed", "reextract", "rollback"))
    js.add_argument("--user", "-u", help="one user (consolidate, link)")
    js.add_argument("--job-id", help="resume this job")
    js.add_argument(
        "--param", "-p", type=_key_value, action="append", metavar="KEY=VALUE",
        help="job parameter, e.g. -p model=all-MiniLM-L6-v2 -p top_k=5",
    )  # fmt: skip
    js = jobs.add_parser("status", help="a job's progress", parents=[common])
    js.add_argument("job_id")
    jobs.add_parser("generations", help="index generations", parents=[common])

    sp = command("keys", "API keys (admin)", cmd_keys, options=False)
    keys = sp.add_subparsers(dest="keys_cmd", required=True, metavar="create|ls|rm")
    ks = keys.add_parser("create", help="create a key (its secret is shown once)", parents=[common])
    ks.add_argument("--tenant", required=True)
    ks.add_argument("--name", required=True)
    ks.add_argument("--expires-at", help="ISO 8601")
    ks.add_argument("--rate-limit", type=int, help="requests per minute")
    ks = keys.add_parser("ls", help="list keys", parents=[common])
    ks.add_argument("--tenant")
    ks = keys.add_parser("rm", help="revoke a key", parents=[common])
    ks.add_argument("key_id")

    sp = command("audit", "the audit log (changes, oldest first)", cmd_audit)
    sp.add_argument("--user", "-u")
    sp.add_argument("--since", help="ISO 8601")
    sp.add_argument("--limit", "-n", type=int)
    sp.add_argument("--after", type=int, help="the previous page's last entry id")
    sp.add_argument("--tenant", help="admin key: only this tenant")

    sp = sub.add_parser(
        "mcp",
        help="run the MCP server on stdio (what desktop agents launch)",
        description="Run the MCP server on stdio; its tools call the service at --url.",
    )
    sp.add_argument("--url", help="service URL (default: $MEMSERVE_URL or http://127.0.0.1:8000)")
    sp.add_argument("--api-key", help="API key (default: $MEMSERVE_API_KEY)")
    sp.add_argument(
        "--user-id", dest="default_user",
        help="user the tools act for when a call names none (default: $MEMSERVE_USER_ID)",
    )  # fmt: skip
    sp.set_defaults(fn=None, local=cmd_mcp)

    sp = sub.add_parser(
        "env",
        help="print the exports that point Ray's CLIs (serve, ray job) at `make serve`'s cluster",
        description='Use as: eval "$(memserve env)"',
    )
    sp.add_argument(
        "--data-dir", help="the service's data directory (default: $MEMSERVE_DATA_DIR or ./data)"
    )
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(fn=None, local=cmd_env)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.fn is None:
            return args.local(args)
        with MemoryClient(args.url, args.api_key, timeout=args.timeout) as client:
            return args.fn(client, args, Output(args.json))
    except MemserveError as e:
        print(f"memserve {args.command}: {e}", file=sys.stderr)
        return exit_code(e)
    except (OSError, json.JSONDecodeError) as e:
        print(f"memserve {args.command}: {e}", file=sys.stderr)
        return USAGE if isinstance(e, FileNotFoundError | json.JSONDecodeError) else ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
