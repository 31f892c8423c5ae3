import shlex

import pytest
from pydantic import ValidationError

from serve_app.api_models import JobRequest, SearchRequest
from serve_app.jobs.submit import entrypoint


def test_job_request_validation():
    r = JobRequest(kind="consolidate", user_id="u1", decider="dedup", min_score=0.7)
    assert r.job_params() == {"decider": "dedup", "min_score": 0.7}
    assert JobRequest(kind="reembed", model="/models/x").job_params() == {"model": "/models/x"}
    for bad in (
        {"kind": "reembed"},  # no model
        {"kind": "reembed", "model": "m", "user_id": "u"},  # rebuilds are global
        {"kind": "link", "decider": "dedup"},  # not a link parameter
        {"kind": "consolidate", "decider": "scripted:/etc/passwd"},  # not over HTTP
        {"kind": "consolidate", "top_k": 0},
        {"kind": "vacuum"},
    ):
        with pytest.raises(ValidationError):
            JobRequest(**bad)


def test_search_request_expand_links_defaults_off():
    assert SearchRequest(user_id="u", query="q").expand_links is False


def test_entrypoint_is_a_quoted_module_command():
    cmd = entrypoint("consolidate", "j1", "u 1", {"min_score": 0.5, "decider": "dedup"})
    args = shlex.split(cmd)
    assert args[1:] == [
        "-m", "serve_app.jobs.consolidate", "--job-id", "j1", "--user-id", "u 1",
        "--min-score", "0.5", "--decider", "dedup",
    ]  # fmt: skip
