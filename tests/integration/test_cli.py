"""The `memserve` command line against the live service, through subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

pytestmark = pytest.mark.integration


def memserve(running, key: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMSERVE_URL": running.url, "MEMSERVE_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "memserve.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_cli_round_trip(running, agent_key):
    user = f"cli-{uuid.uuid4().hex[:8]}"
    r = memserve(running, agent_key, "add", "-u", user, "-s", "s1", "--name", "Cy", "--wait",
                 "I", "keep", "bees", "on", "my", "roof.")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "stored 1 of 1 message(s) in session s1 (searchable)" in r.stdout

    r = memserve(
        running, agent_key, "search", "-u", user, "--json", "what", "animals", "do", "I", "keep?"
    )
    assert r.returncode == 0, r.stderr
    hit = json.loads(r.stdout)["results"][0]
    assert "bees" in hit["memory"]

    r = memserve(running, agent_key, "search", "-u", user, "bees")
    assert r.returncode == 0 and hit["id"] in r.stdout and "bees" in r.stdout

    r = memserve(running, agent_key, "ls", "-u", user)
    assert r.returncode == 0 and hit["id"] in r.stdout

    r = memserve(running, agent_key, "get", "-u", user, hit["id"])
    assert r.returncode == 0 and "speaker:   Cy" in r.stdout

    r = memserve(running, agent_key, "session", "-u", user, "s1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["messages"]["received"] == 1

    r = memserve(running, agent_key, "rm", "-u", user, hit["id"])
    assert r.returncode == 0 and f"deleted memory {hit['id']}" in r.stdout
    r = memserve(running, agent_key, "get", "-u", user, hit["id"])
    assert r.returncode == 3 and "unknown_memory" in r.stderr

    r = memserve(running, agent_key, "erase-user", user)
    assert r.returncode == 2  # asks for --yes
    r = memserve(running, agent_key, "erase-user", user, "--yes")
    assert r.returncode == 0 and f"erased user {user}" in r.stdout
    r = memserve(running, agent_key, "search", "-u", user, "bees")
    assert r.returncode == 3

    r = memserve(running, agent_key, "add", "-u", user, "--timestamp", "yesterday-ish", "hello")
    assert r.returncode == 2 and "timestamp" in r.stderr


def test_cli_exit_codes_for_keys(running, agent_key):
    r = memserve(running, "", "search", "-u", "x", "anything")
    assert r.returncode == 4 and "missing_key" in r.stderr
    r = memserve(running, agent_key, "keys", "ls")
    assert r.returncode == 4 and "admin_only" in r.stderr
    r = memserve(running, running.admin_key, "keys", "ls", "--tenant", "agents", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["tenant"] == "agents"
