import shlex

import pytest

from jobs import reextract
from jobs.submit import entrypoint


def test_reextract_command_line_parses_what_the_api_passes(monkeypatch):
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
