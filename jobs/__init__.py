"""Ray Data drivers of the offline jobs, one module per job, each runnable as
`ray job submit -- python -m jobs.<name> --job-id ...` (or started by POST /v1/jobs):
consolidate, link, reembed, reextract; `jobs.generations` switches index generations by hand.

They only wire Ray to the pure code: decisions, plans and prompts in serve_app.maintenance,
every SQL statement in serve_app.storage.
"""
