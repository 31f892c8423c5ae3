import pytest
from pydantic import ValidationError

from memserve.models import AddMemoriesRequest, JobRequest, MemoryPatch, SearchRequest


def _add(**kw):
    body = {
        "user_id": "u1",
        "session_id": "s1",
        "messages": [{"role": "user", "content": "hi", "message_id": "m1"}],
    }
    body.update(kw)
    return AddMemoriesRequest.model_validate(body)


def test_valid_request_parses_lightmem_timestamps():
    req = _add(messages=[{"role": "tool", "content": "x", "timestamp": "2023/05/20 (Sat) 00:44"}])
    assert req.messages[0].timestamp.isoformat() == "2023-05-20T00:44:00+00:00"


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"messages": []}, "at least 1"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": "   "}]}, "blank"),
        ({"messages": [{"role": "user", "content": "x", "timestamp": "soon"}]}, "timestamp"),
        ({"user_id": "a b"}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"session_id": "x" * 129}, "session_id"),
        ({"unknown": 1}, "unknown"),
        (
            {
                "messages": [
                    {"role": "user", "content": "a", "message_id": "m"},
                    {"role": "user", "content": "b", "message_id": "m"},
                ]
            },
            "repeated",
        ),
    ],
)
def test_bad_add_requests_name_the_problem(change, fragment):
    with pytest.raises(ValidationError, match=fragment):
        _add(**change)


def test_search_defaults_and_limits():
    req = SearchRequest.model_validate({"user_id": "u", "query": "dog"})
    assert (req.limit, req.strategy) == (10, "hybrid")
    with pytest.raises(ValidationError, match="limit"):
        SearchRequest.model_validate({"user_id": "u", "query": "dog", "limit": 0})
    with pytest.raises(ValidationError, match="strategy"):
        SearchRequest.model_validate({"user_id": "u", "query": "dog", "strategy": "magic"})
    with pytest.raises(ValidationError, match="time_from is after time_to"):
        SearchRequest.model_validate(
            {
                "user_id": "u",
                "query": "q",
                "filters": {"time_from": "2024-01-02", "time_to": "2024-01-01"},
            }
        )
    for bad in ({}, [], 5, True):
        with pytest.raises(ValidationError, match="must be a timestamp string"):
            SearchRequest.model_validate(
                {"user_id": "u", "query": "q", "filters": {"time_to": bad}}
            )


def test_patch_needs_a_change():
    with pytest.raises(ValidationError, match="nothing to change"):
        MemoryPatch.model_validate({})
    with pytest.raises(ValidationError, match="importance"):
        MemoryPatch.model_validate({"importance": 2})
    assert MemoryPatch.model_validate({"memory": "new"}).memory == "new"


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


def test_reextract_request_validation():
    r = JobRequest(kind="reextract", prompt="Facts only.", no_compress=True, llm_model="m",
                   entry_unit="window2", activate=False)  # fmt: skip
    params = r.job_params()
    assert params == {"prompt": "Facts only.", "no_compress": True, "llm_model": "m",
                      "entry_unit": "window2", "no_activate": True}  # fmt: skip
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


def test_search_request_expand_links_defaults_off():
    assert SearchRequest(user_id="u", query="q").expand_links is False


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"messages": [{"role": "user", "content": "a\x00b"}]}, "NUL"),
        ({"metadata": {"k\x00": 1}}, "NUL"),
        ({"messages": [{"role": "user", "content": "a\ud800"}]}, "surrogates"),
        ({"metadata": {"k": [1.0, float("nan")]}}, "finite"),
        ({"metadata": {"k": {"deep": float("inf")}}}, "finite"),
    ],
)
def test_what_postgresql_cannot_store_is_refused(change, why):
    body = {"user_id": "u", "session_id": "s", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(ValidationError, match=why):
        AddMemoriesRequest.model_validate({**body, **change})
    with pytest.raises(ValidationError, match="NUL"):
        MemoryPatch.model_validate({"memory": "a\x00"})
