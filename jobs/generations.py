"""Index generations from the command line: status, activate, rollback (one call).

    python -m jobs.generations status|rollback|activate N [--app memserve]

A generation indexes one memory version (`memory_version` in the status, with the extraction
parameters that built it), so activating or rolling back a generation switches the embedding
model and the memories served together. Runs as a Ray driver on the service's cluster (e.g.
through `ray job submit`); GET /v1/generations shows the same status."""

from __future__ import annotations

import argparse
import json

import ray

from deployments.apps import memory_index_handle


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jobs.generations")
    p.add_argument("action", choices=("status", "rollback", "activate"))
    p.add_argument("generation", nargs="?", type=int)
    p.add_argument("--app", default="memserve")
    args = p.parse_args(argv)
    ray.init(address="auto", log_to_driver=False)
    handle = memory_index_handle(args.app)
    if args.action == "status":
        out = handle.generation_status.remote().result()
    elif args.action == "rollback":
        out = handle.rollback_generation.remote().result()
    else:
        if args.generation is None:
            p.error("activate needs a generation number")
        out = handle.activate_generation.remote(args.generation).result()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
