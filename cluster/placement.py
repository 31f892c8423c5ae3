"""Placement check: pack a profile's replicas onto its nodes the way Ray schedules them.

Every replica group is counted at its maximum replica count. GPUs are tracked per device
as Ray's raylet does (`NodeResourceInstanceSet::TryAllocate`): a demand of one GPU or more
takes whole free devices, a fractional demand goes to the device with the least capacity
left that still fits (best fit), so a fractional replica never straddles two GPUs. CPU and
`memory` are per node; CPU-only replicas prefer nodes without GPUs (Ray's
`scheduler_avoid_gpu_nodes`) and spread across nodes as Serve does. Device memory, which
Ray does not track, is checked too: vLLM takes `gpu_memory_utilization` of its device and
the other groups their estimated `gpu_memory_bytes`.

Replica start order is not fixed in Serve, so the check packs twice, largest GPU share
first and smallest first; both must succeed.

    python -m cluster.placement            # every profile, a table each, exit 1 on failure
    python -m cluster.placement t4 --json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from serve_app.profiles import PROFILES, GiB, GroupResources, HardwareProfile, LLMGroup

# Ray compares resources in fixed point with 4 decimals.
EPS = 1e-4
ORDERS = ("largest_gpu_first", "smallest_gpu_first")


@dataclass(frozen=True)
class Bundle:
    cpus: float
    gpus: float
    memory: int
    gpu_memory: int  # device memory per GPU this bundle touches
    accelerator: str | None


@dataclass(frozen=True)
class Replica:
    deployment: str
    index: int
    bundles: tuple[Bundle, ...]
    strict_pack: bool = False

    @property
    def gpus(self) -> float:
        return sum(b.gpus for b in self.bundles)

    @property
    def cpus(self) -> float:
        return sum(b.cpus for b in self.bundles)

    @property
    def label(self) -> str:
        return f"{self.deployment}#{self.index}"


@dataclass
class GPUState:
    free: float = 1.0
    memory_total: int = 0
    memory_used: int = 0
    holders: list[str] = field(default_factory=list)


@dataclass
class NodeState:
    name: str
    gpu_type: str | None
    head: bool
    cpus_total: float
    cpus_free: float
    memory_total: int
    memory_free: int
    gpus: list[GPUState]
    holders: list[str] = field(default_factory=list)

    def cpu_utilization(self) -> float:
        return 1.0 if self.cpus_total == 0 else 1 - self.cpus_free / self.cpus_total


@dataclass
class Placement:
    profile: str
    order: str
    nodes: list[NodeState]
    errors: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "order": self.order,
            "ok": self.ok,
            "errors": self.errors,
            "nodes": [
                {
                    "name": n.name,
                    "cpus_used": round(n.cpus_total - n.cpus_free, 4),
                    "cpus_total": n.cpus_total,
                    "memory_used_gib": round((n.memory_total - n.memory_free) / GiB, 2),
                    "memory_total_gib": round(n.memory_total / GiB, 2),
                    "replicas": sorted(n.holders),
                    "gpus": [
                        {
                            "share_used": round(1 - g.free, 4),
                            "memory_used_gib": round(g.memory_used / GiB, 2),
                            "memory_total_gib": round(g.memory_total / GiB, 2),
                            "replicas": sorted(g.holders),
                        }
                        for g in n.gpus
                    ],
                }
                for n in self.nodes
            ],
        }


def _bundles(group: GroupResources, gpu_memory_of: float | None) -> tuple[Bundle, ...]:
    if isinstance(group, LLMGroup) and group.backend == "vllm":
        # Ray Serve LLM: one bundle per tensor-parallel rank; the replica actor's CPU and
        # memory are merged into the first one.
        per_gpu = int(group.gpu_memory_utilization * gpu_memory_of) if gpu_memory_of else 0
        first = Bundle(
            group.num_cpus, group.num_gpus, group.memory_bytes or 0, per_gpu, group.accelerator_type
        )
        rest = Bundle(0.0, group.num_gpus, 0, per_gpu, group.accelerator_type)
        return (first, *([rest] * (group.tensor_parallel_size - 1)))
    return (
        Bundle(
            group.num_cpus,
            group.num_gpus,
            group.memory_bytes or 0,
            group.gpu_memory_bytes or 0,
            None,
        ),
    )


def replicas_of(profile: HardwareProfile, include_optional: bool = True) -> list[Replica]:
    """All replicas at their maximum counts; `include_optional` counts the compressor even
    when the profile names no model (a user may configure one)."""
    groups = dict(profile.groups())
    if include_optional and profile.compressor is not None:
        groups.setdefault("Compressor", profile.compressor)
    gpu_mem = {n.gpu_type: n.gpu_memory_bytes for n in profile.gpu_nodes}
    out: list[Replica] = []
    for name, group in groups.items():
        device_mem = None
        if isinstance(group, LLMGroup):
            first = next(iter(gpu_mem.values()), None)
            device_mem = gpu_mem.get(group.accelerator_type, first)
        bundles = _bundles(group, device_mem)
        strict = isinstance(group, LLMGroup) and group.tensor_parallel_size > 1
        out.extend(Replica(name, i, bundles, strict) for i in range(group.max_replicas))
    return out


def _missing_estimates(profile: HardwareProfile) -> list[str]:
    return [
        f"{name}: num_gpus={g.num_gpus} but no gpu_memory_bytes estimate"
        for name, g in profile.groups().items()
        if g.num_gpus and not isinstance(g, LLMGroup) and not g.gpu_memory_bytes
    ]


def _nodes(profile: HardwareProfile) -> list[NodeState]:
    nodes = []
    for spec in profile.nodes:
        for i in range(spec.count):
            nodes.append(
                NodeState(
                    name=spec.name if spec.count == 1 else f"{spec.name}-{i}",
                    gpu_type=spec.gpu_type,
                    head=spec.head,
                    cpus_total=spec.cpus,
                    cpus_free=spec.cpus,
                    memory_total=spec.ray_memory_bytes(),
                    memory_free=spec.ray_memory_bytes(),
                    gpus=[
                        GPUState(memory_total=spec.gpu_memory_bytes or 0) for _ in range(spec.gpus)
                    ],
                )
            )
    return nodes


def _gpu_instances(node: NodeState, demand: float) -> list[tuple[int, float]] | None:
    """Which devices Ray would give `demand` GPUs on this node, or None."""
    free = [g.free for g in node.gpus]
    taken: list[tuple[int, float]] = []
    remaining = demand
    if remaining >= 1 - EPS:
        for i, f in enumerate(free):
            if remaining < 1 - EPS:
                break
            if f >= 1 - EPS:
                taken.append((i, 1.0))
                free[i] = 0.0
                remaining -= 1.0
        if remaining >= 1 - EPS:
            return None
    if remaining > EPS:
        fits = [(f - remaining, i) for i, f in enumerate(free) if f >= remaining - EPS]
        if not fits:
            return None
        _, best = min(fits)
        taken.append((best, remaining))
    return taken


def _fits(node: NodeState, b: Bundle) -> list[tuple[int, float]] | None:
    if node.cpus_free < b.cpus - EPS or node.memory_free < b.memory:
        return None
    if b.gpus <= 0:
        return []
    if b.accelerator and node.gpu_type != b.accelerator:
        return None
    devices = _gpu_instances(node, b.gpus)
    if devices is None:
        return None
    for i, _ in devices:
        g = node.gpus[i]
        if g.memory_used + b.gpu_memory > g.memory_total:
            return None
    return devices


def _take(node: NodeState, b: Bundle, devices: list[tuple[int, float]], label: str) -> None:
    node.cpus_free -= b.cpus
    node.memory_free -= b.memory
    node.holders.append(label)
    for i, share in devices:
        g = node.gpus[i]
        g.free -= share
        g.memory_used += b.gpu_memory
        g.holders.append(label)


def _candidates(nodes: list[NodeState], b: Bundle) -> list[NodeState]:
    if b.gpus > 0:
        return [n for n in nodes if n.gpus]
    # CPU-only work avoids GPU nodes when it can, then spreads by CPU load.
    return sorted(nodes, key=lambda n: (bool(n.gpus), n.cpu_utilization()))


def _place_replica(nodes: list[NodeState], r: Replica) -> bool:
    if r.strict_pack:
        # STRICT_PACK: every bundle on one node, tried on a copy so a miss leaves no trace.
        for node in _candidates(nodes, r.bundles[0]):
            trial = copy.deepcopy(node)
            for b in r.bundles:
                devices = _fits(trial, b)
                if devices is None:
                    break
                _take(trial, b, devices, r.label)
            else:
                nodes[nodes.index(node)] = trial
                return True
        return False
    for b in r.bundles:
        for node in _candidates(nodes, b):
            devices = _fits(node, b)
            if devices is not None:
                _take(node, b, devices, r.label)
                break
        else:
            return False
    return True


def _ordered(replicas: list[Replica], order: str) -> list[Replica]:
    gpu = [r for r in replicas if r.gpus > 0]
    cpu = [r for r in replicas if r.gpus <= 0]
    descending = order == "largest_gpu_first"
    gpu.sort(key=lambda r: (r.gpus, r.cpus), reverse=descending)
    cpu.sort(key=lambda r: r.cpus, reverse=True)
    return gpu + cpu


def place(profile: HardwareProfile, order: str = ORDERS[0]) -> Placement:
    nodes = _nodes(profile)
    errors = _missing_estimates(profile)
    if not any(n.head for n in nodes):
        errors.append("no head node: the Serve controller has nowhere to run")
    for r in _ordered(replicas_of(profile), order):
        if not _place_replica(nodes, r):
            need = ", ".join(
                f"{{cpu {b.cpus}, gpu {b.gpus}, mem {b.memory / GiB:.1f} GiB, "
                f"gpu mem {b.gpu_memory / GiB:.1f} GiB}}"
                for b in r.bundles
            )
            errors.append(f"cannot place {r.label}: needs {need}")
    for n in nodes:
        for i, g in enumerate(n.gpus):
            if g.free < -EPS or g.memory_used > g.memory_total:
                errors.append(f"{n.name} GPU {i} oversubscribed")
    return Placement(profile.name, order, nodes, errors)


def check(profile: HardwareProfile) -> list[Placement]:
    return [place(profile, order) for order in ORDERS]


def _table(p: Placement) -> str:
    lines = [f"[{p.profile}] order={p.order}: {'OK' if p.ok else 'FAILED'}"]
    for n in p.nodes:
        used_cpu = n.cpus_total - n.cpus_free
        used_mem = (n.memory_total - n.memory_free) / GiB
        lines.append(
            f"  {n.name:<8} cpu {used_cpu:5.2f}/{n.cpus_total:<5g} "
            f"mem {used_mem:6.1f}/{n.memory_total / GiB:<6.1f} GiB"
        )
        for i, g in enumerate(n.gpus):
            lines.append(
                f"    gpu{i} share {1 - g.free:4.2f}  mem {g.memory_used / GiB:5.1f}/"
                f"{g.memory_total / GiB:.1f} GiB  {', '.join(sorted(g.holders))}"
            )
    lines.extend(f"  ERROR {e}" for e in p.errors)
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="*", help="profile names (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(list(argv) if argv is not None else None)
    names = args.profiles or list(PROFILES)
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        parser.error(f"unknown profiles {unknown}; known: {sorted(PROFILES)}")
    results = [p for n in names for p in check(PROFILES[n])]
    if args.json:
        print(json.dumps([p.to_dict() for p in results], indent=2))
    else:
        print("\n".join(_table(p) for p in results))
    return 0 if all(p.ok for p in results) else 1


if __name__ == "__main__":
    sys.exit(main())
