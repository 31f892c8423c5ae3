"""Start job drivers on the service's own Ray cluster through its job-submission API (what
`ray job submit` does), so they run, log and can be stopped like any Ray job."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def entrypoint(kind: str, job_id: str, user_id: str | None, params: dict) -> str:
    args = [sys.executable, "-m", f"jobs.{kind}", "--job-id", job_id]
    if user_id:
        args += ["--user-id", user_id]
    for key, value in params.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:  # a switch (store_true option)
            args.append(flag)
        elif value is not False and value is not None:
            args += [flag, str(value)]
    return shlex.join(args)


def client(address: str | None = None):
    """A JobSubmissionClient for the cluster this process belongs to (its dashboard address is
    looked up from the GCS), or for `address`."""
    import ray
    from ray.job_submission import JobSubmissionClient

    if address is None:
        address = ray.get_runtime_context().gcs_address
    return JobSubmissionClient(address)


def submit(kind: str, job_id: str, user_id: str | None, params: dict, attempt: int = 0) -> str:
    return client().submit_job(
        entrypoint=entrypoint(kind, job_id, user_id, params),
        submission_id=f"memserve-{kind}-{job_id}-{attempt}",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        entrypoint_num_cpus=0,
    )


def ray_status(submission_id: str) -> str | None:
    try:
        return str(client().get_job_status(submission_id).value)
    except Exception:  # unknown to this cluster (e.g. started before a restart)
        return None
