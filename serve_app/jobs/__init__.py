"""Offline batch jobs: sleep-time consolidation, memory linking, embedding rebuilds.

Pure logic (decisions, prompts, progress) lives in modules that import no Ray; the Ray Data
drivers are `serve_app.jobs.consolidate`, `serve_app.jobs.link` and `serve_app.jobs.reembed`,
each runnable as `ray job submit -- python -m serve_app.jobs.<name> --job-id ...`.
"""

JOB_KINDS = ("consolidate", "link", "reembed")
