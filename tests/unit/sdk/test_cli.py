"""The command line's output, exit codes and argument handling, against httpx.MockTransport
(the live service through subprocess: tests/integration/test_cli.py)."""

from __future__ import annotations

import functools
import json

import httpx
import pytest

from memserve import NO_RETRY, MemoryClient, cli, cluster_env

MID = "8b0e7a4e-0c3e-4a59-9d7a-1a2b3c4d5e6f"
MEMORY = {
    "id": MID,
    "memory": "Alice: I adopted a golden retriever named Max.",
    "timestamp": "2023-05-20T10:00:00Z",
    "session_id": "s1",
    "source_message_ids": ["m1"],
    "metadata": {},
}


@pytest.fixture
def service(monkeypatch):
    requests: list[httpx.Request] = []
    answers: dict[tuple[str, str], httpx.Response] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answers.get(
            (request.method, request.url.path),
            httpx.Response(404, json={"error": {"code": "unknown_user", "message": "nobody"}}),
        )

    monkeypatch.setattr(
        cli,
        "MemoryClient",
        functools.partial(MemoryClient, transport=httpx.MockTransport(handler), retry=NO_RETRY),
    )
    return answers, requests


def test_search_prints_ranked_lines_or_json(service, capsys):
    answers, requests = service
    answers[("POST", "/v1/search")] = httpx.Response(
        200, json={"results": [{**MEMORY, "score": 0.5}], "took_ms": 1}
    )
    assert (
        cli.main(["search", "-u", "alice", "what", "dog?", "--from", "2023-05-01", "-n", "3"]) == 0
    )
    line = capsys.readouterr().out.strip()
    assert line.startswith("1.  0.500  2023-05-20 10:00  [s1]  Alice: I adopted") and MID in line
    assert json.loads(requests[0].content) == {
        "user_id": "alice",
        "query": "what dog?",
        "limit": 3,
        "filters": {"time_from": "2023-05-01T00:00:00Z"},
    }
    assert cli.main(["search", "-u", "alice", "dog", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["id"] == MID


def test_add_from_arguments_and_from_a_file(service, capsys, tmp_path):
    answers, requests = service
    answers[("POST", "/v1/memories")] = httpx.Response(
        200, json={"session_id": "s1", "accepted": 1, "message_ids": ["m9"], "pending": 0}
    )
    assert (
        cli.main(
            ["add", "-u", "alice", "-s", "s1", "--name", "Alice", "I", "like", "tea", "--wait"]
        )
        == 0
    )
    assert "stored 1 of 1 message(s) in session s1 (searchable)" in capsys.readouterr().out
    body = json.loads(requests[0].content)
    assert body["messages"][0]["content"] == "I like tea" and body["messages"][0]["name"] == "Alice"
    f = tmp_path / "m.json"
    f.write_text(json.dumps([{"role": "assistant", "content": "noted", "message_id": "m9"}]))
    assert cli.main(["add", "-u", "alice", "--file", str(f)]) == 0
    assert json.loads(requests[1].content)["messages"][0]["message_id"] == "m9"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, cli.NOT_FOUND),
        (401, cli.AUTH),
        (403, cli.AUTH),
        (503, cli.ERROR),
        (429, cli.RATE_LIMITED),
        (422, cli.USAGE),
    ],
)
def test_exit_codes(service, capsys, status, code):
    answers, _ = service
    answers[("GET", f"/v1/memories/{MID}")] = httpx.Response(
        status, json={"error": {"code": "c", "message": "m"}}
    )
    assert cli.main(["get", "-u", "alice", MID]) == code
    assert f"HTTP {status} c: m" in capsys.readouterr().err


def test_invalid_input_and_usage_errors(service, capsys):
    _, requests = service
    assert cli.main(["update", "-u", "alice", MID]) == cli.USAGE  # nothing to change
    assert cli.main(["erase-user", "alice"]) == cli.USAGE  # no --yes
    with pytest.raises(SystemExit) as e:
        cli.main(["search", "dog"])  # no --user
    assert e.value.code == cli.USAGE
    assert requests == []


def test_env_prints_the_exports_of_the_running_cluster(tmp_path, capsys):
    assert cli.main(["env", "--data-dir", str(tmp_path)]) == cli.NOT_FOUND
    exports = cluster_env.write(tmp_path, "t", "http://127.0.0.1:26004", "http://s", tmp_path)
    assert cli.main(["env", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "export RAY_DASHBOARD_ADDRESS=http://127.0.0.1:26004\n" in out
    assert f"export RAY_AUTH_TOKEN_PATH={exports['RAY_AUTH_TOKEN_PATH']}\n" in out
    assert cli.main(["env", "--data-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == exports
