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


def test_reextract_request_validation_and_its_command_line():
    r = JobRequest(kind="reextract", prompt="Facts only.", no_compress=True, llm_model="m",
                   entry_unit="window2", activate=False)  # fmt: skip
    params = r.job_params()
    assert params == {"prompt": "Facts only.", "no_compress": True, "llm_model": "m",
                      "entry_unit": "window2", "no_activate": True}  # fmt: skip
    args = shlex.split(entrypoint("reextract", "j1", None, params))
    assert args[1:] == [
        "-m", "serve_app.jobs.reextract", "--job-id", "j1", "--prompt", "Facts only.",
        "--no-compress", "--llm-model", "m", "--entry-unit", "window2", "--no-activate",
    ]  # fmt: skip
    assert JobRequest(kind="reextract").job_params() == {}  # the service's configuration
    assert JobRequest(kind="reextract", activate=True).job_params() == {}
    for bad in (
        {"kind": "reextract", "user_id": "u"},  # a memory version covers every user
        {"kind": "reextract", "compress_rate": 0.5, "no_compress": True},
        {"kind": "reextract", "llm_model": "m", "no_llm": True},
        {"kind": "reextract", "compress_rate": 0},
        {"kind": "reextract", "entry_unit": "sentence"},
        {"kind": "reextract", "prompt": "   "},
        {"kind": "reextract", "model": "/models/x"},  # a reembed parameter
        {"kind": "consolidate", "no_llm": True},
        {"kind": "reextract", "job_id": "j", "no_llm": True},  # a resumed job keeps its own
    ):
        with pytest.raises(ValidationError):
            JobRequest(**bad)


def test_reextract_command_line_parses_what_the_api_passes(monkeypatch):
    from serve_app.jobs import reextract

    seen = {}

    class FakeRun:
        def __init__(self, args, kind, params):
            seen.update(kind=kind, params=params)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(reextract, "JobRun", FakeRun)
    monkeypatch.setattr(reextract, "run_reextract", lambda run, args: None)
    params = {"prompt": "P q", "compress_rate": 0.5, "no_llm": True, "no_activate": True}
    reextract.main(shlex.split(entrypoint("reextract", "j1", None, params))[3:])
    assert seen == {"kind": "reextract", "params": params}
    with pytest.raises(SystemExit):
        reextract.main(["--user-id", "u"])


def test_search_request_expand_links_defaults_off():
    assert SearchRequest(user_id="u", query="q").expand_links is False


def test_entrypoint_is_a_quoted_module_command():
    cmd = entrypoint("consolidate", "j1", "u 1", {"min_score": 0.5, "decider": "dedup"})
    args = shlex.split(cmd)
    assert args[1:] == [
        "-m", "serve_app.jobs.consolidate", "--job-id", "j1", "--user-id", "u 1",
        "--min-score", "0.5", "--decider", "dedup",
    ]  # fmt: skip
