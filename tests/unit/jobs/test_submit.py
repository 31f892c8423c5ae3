import shlex

from jobs.submit import entrypoint


def test_entrypoint_is_a_quoted_module_command():
    cmd = entrypoint("consolidate", "j1", "u 1", {"min_score": 0.5, "decider": "dedup"})
    args = shlex.split(cmd)
    assert args[1:] == [
        "-m", "jobs.consolidate", "--job-id", "j1", "--user-id", "u 1",
        "--min-score", "0.5", "--decider", "dedup",
    ]  # fmt: skip


def test_reextract_params_become_its_command_line():
    params = {"prompt": "Facts only.", "no_compress": True, "llm_model": "m",
              "entry_unit": "window2", "no_activate": True}  # fmt: skip
    args = shlex.split(entrypoint("reextract", "j1", None, params))
    assert args[1:] == [
        "-m", "jobs.reextract", "--job-id", "j1", "--prompt", "Facts only.",
        "--no-compress", "--llm-model", "m", "--entry-unit", "window2", "--no-activate",
    ]  # fmt: skip
