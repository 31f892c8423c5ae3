"""Reserve a profile's replicas on a live Ray cluster, report what stays pending, release.

The placement check (cluster/placement.py) models Ray's scheduler; this asks Ray itself.
Every replica's bundles become a placement group (what Ray Serve LLM does for the LLM, and
the same per-node, per-GPU accounting Serve's replica actors get), reserved one by one in
the placement check's order. Nothing is started; the reservations are removed at the end.
Run it against an empty cluster: resources in use elsewhere count against the profile.

    python -m cluster.reserve_check --address HEAD:6379 --profile t4
    python -m cluster.reserve_check --address HEAD:6379 --profile-json my-profile.json

Prints {"order": ..., "pending": [replica, ...]} per order as JSON; exit 1 if any pending.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cluster import placement
from serve_app.profiles import HardwareProfile, get_profile


def ray_bundle(b: placement.Bundle) -> dict[str, float]:
    bundle = {"CPU": b.cpus, "GPU": b.gpus, "memory": float(b.memory)}
    if b.accelerator:
        # The hint Ray Serve LLM adds so engine workers land on that GPU kind.
        bundle[f"accelerator_type:{b.accelerator}"] = 0.001
    bundle = {k: v for k, v in bundle.items() if v}
    # Ray refuses empty bundles; a zero-resource replica still needs a slot.
    return bundle or {"CPU": 0.0001}


def reserve(profile: HardwareProfile, order: str, wait_s: float) -> list[str]:
    """Labels of the replicas Ray could not reserve within `wait_s` each."""
    from ray.util.placement_group import placement_group, remove_placement_group

    pending, groups = [], []
    try:
        for r in placement._ordered(placement.replicas_of(profile), order):
            strategy = "STRICT_PACK" if r.strict_pack else "PACK"
            pg = placement_group([ray_bundle(b) for b in r.bundles], strategy=strategy)
            groups.append(pg)
            if not pg.wait(timeout_seconds=wait_s):
                pending.append(r.label)
    finally:
        for pg in groups:
            remove_placement_group(pg)
    return pending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="Ray GCS address, host:port")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--profile", help="a profile name from serve_app/profiles.py")
    which.add_argument("--profile-json", type=Path, help="a HardwareProfile as JSON")
    parser.add_argument("--order", choices=placement.ORDERS, action="append")
    parser.add_argument("--wait-s", type=float, default=5.0, help="wait per replica")
    args = parser.parse_args(argv)
    if args.profile:
        profile = get_profile(args.profile)
    else:
        profile = HardwareProfile.model_validate_json(args.profile_json.read_text())

    import ray

    ray.init(address=args.address, log_to_driver=False)
    try:
        results = []
        for order in args.order or placement.ORDERS:
            results.append({"order": order, "pending": reserve(profile, order, args.wait_s)})
            time.sleep(0.5)  # removals are asynchronous; let them land before the next order
    finally:
        ray.shutdown()
    print(json.dumps(results))
    return 1 if any(r["pending"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
