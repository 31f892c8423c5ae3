"""cluster/placement.py: every profile packs onto its nodes; oversubscribed ones do not."""

from __future__ import annotations

import json

import pytest

from cluster import placement
from serve_app.profiles import (
    PROFILES,
    T4,
    GiB,
    GroupResources,
    HardwareProfile,
    LLMGroup,
    NodeSpec,
)


def _with(profile: HardwareProfile, **groups) -> HardwareProfile:
    """A copy of `profile` with some groups changed (validated like any profile)."""
    data = profile.model_dump()
    for name, changes in groups.items():
        data[name] = {**data[name], **changes}
    return HardwareProfile.model_validate(data)


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_places_in_both_start_orders(name):
    results = placement.check(PROFILES[name])
    assert [p.order for p in results] == list(placement.ORDERS)
    for p in results:
        assert p.ok, p.errors
        placed = sorted(h for n in p.nodes for h in n.holders)
        expected = sorted(r.label for r in placement.replicas_of(PROFILES[name]) for _ in r.bundles)
        assert placed == expected
        for node in p.nodes:
            assert node.cpus_free >= -placement.EPS
            assert node.memory_free >= 0
            for gpu in node.gpus:
                assert gpu.free >= -placement.EPS
                assert gpu.memory_used <= gpu.memory_total


def test_t4_packs_all_three_gpu_groups_on_its_one_gpu():
    (p, _) = placement.check(T4)
    gpu = next(n for n in p.nodes if n.gpus).gpus[0]
    assert sorted(gpu.holders) == ["Compressor#0", "Embedder#0", "LLM#0"]
    assert gpu.free == pytest.approx(0.0)
    # vLLM's share plus the two estimates, on a 15 GiB T4.
    assert gpu.memory_used == int(0.75 * 15 * GiB) + 1280 * 1024**2 + 2 * GiB


def test_a100x8_gives_each_llm_replica_a_whole_gpu():
    for p in placement.check(PROFILES["a100x8"]):
        gpus = next(n for n in p.nodes if n.gpus).gpus
        llm_gpus = [g for g in gpus if any(h.startswith("LLM#") for h in g.holders)]
        assert len(llm_gpus) == 6
        assert all(len(g.holders) == 1 for g in llm_gpus)
        # CPU-only groups go to the CPU nodes first (Ray avoids GPU nodes for them).
        cpu_nodes = [n for n in p.nodes if n.name.startswith("cpu-")]
        assert all(
            h.split("#")[0] in {"Ingress", "MemoryIndex", "IngestWorker"}
            for n in cpu_nodes
            for h in n.holders
        )


def test_gpu_share_oversubscription_fails():
    # 0.9 + 0.1 + 0.1 of one T4: the compressor or the embedder has no room.
    over = _with(T4, llm={"num_gpus": 0.9, "gpu_memory_utilization": 0.7})
    for p in placement.check(over):
        assert not p.ok
        assert any("cannot place" in e for e in p.errors)


def test_gpu_memory_oversubscription_fails_even_when_shares_fit():
    over = _with(T4, embedder={"gpu_memory_bytes": 4 * GiB})
    (p, _) = placement.check(over)
    assert not p.ok
    assert any("Embedder#0" in e or "Compressor#0" in e or "LLM#0" in e for e in p.errors)


def test_cpu_and_memory_oversubscription_fail():
    too_many = _with(T4, memory_index={"num_replicas": 4})
    assert not placement.place(too_many).ok
    too_big = _with(T4, ingress={"memory_bytes": 8 * GiB})
    assert not placement.place(too_big).ok


def test_fractional_replica_never_straddles_two_gpus():
    # Three 0.6-GPU replicas need 1.8 GPUs of 2, but no GPU holds two of them.
    two_gpus = NodeSpec(
        name="gpu",
        cpus=16,
        memory_bytes=64 * GiB,
        gpus=2,
        gpu_type="L4",
        gpu_memory_bytes=22 * GiB,
        head=True,
    )
    profile = _with(
        T4,
        embedder={"num_replicas": 3, "num_gpus": 0.6, "gpu_memory_bytes": 1 * GiB},
    ).model_copy(
        update={
            "nodes": (two_gpus,),
            "compressor": None,
            "llm": LLMGroup(backend="none", num_cpus=0),
        }
    )
    p = placement.place(profile)
    assert len(p.errors) == 1 and "cannot place Embedder#2" in p.errors[0]


def test_tensor_parallel_replica_must_fit_on_one_node():
    # TP=2 on two single-GPU nodes: STRICT_PACK cannot split the ranks across nodes.
    node = NodeSpec(
        name="g",
        count=2,
        cpus=8,
        memory_bytes=64 * GiB,
        gpus=1,
        gpu_type="A100",
        gpu_memory_bytes=80 * GiB,
    )
    head = NodeSpec(name="head", cpus=0, memory_bytes=16 * GiB, head=True)
    llm = LLMGroup(
        backend="vllm",
        model="m",
        num_gpus=1,
        tensor_parallel_size=2,
        accelerator_type="A100",
        num_cpus=1,
    )
    cpu = GroupResources(num_cpus=0.5)
    profile = PROFILES["a100"].model_copy(
        update={
            "nodes": (head, node),
            "llm": llm,
            "compressor": None,
            "embedder": PROFILES["a100"].embedder.model_copy(
                update={"num_gpus": 0, "device": "cpu", "num_replicas": 1}
            ),
            "ingress": cpu,
            "memory_index": cpu,
            "worker": cpu,
        }
    )
    p = placement.place(profile)
    assert any("cannot place LLM#0" in e for e in p.errors)
    # The same replica fits on one node with two GPUs.
    big = node.model_copy(update={"count": 1, "gpus": 2})
    assert placement.place(profile.model_copy(update={"nodes": (head, big)})).ok


def test_llm_only_lands_on_its_accelerator_type():
    wrong = T4.model_copy(update={"llm": T4.llm.model_copy(update={"accelerator_type": "A100"})})
    assert any("cannot place LLM#0" in e for e in placement.place(wrong).errors)


def test_cli_exit_codes_and_json(capsys):
    assert placement.main([]) == 0
    assert "[a100x8] order=smallest_gpu_first: OK" in capsys.readouterr().out
    assert placement.main(["t4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["order"] for d in data] == list(placement.ORDERS) and all(d["ok"] for d in data)
    with pytest.raises(SystemExit):
        placement.main(["no-such-profile"])


def test_reserve_check_bundles_mirror_ray_serve_llm():
    from cluster.reserve_check import ray_bundle

    llm = next(r for r in placement.replicas_of(T4) if r.deployment == "LLM")
    (bundle,) = llm.bundles
    assert ray_bundle(bundle) == {
        "CPU": 1.0,
        "GPU": 0.8,
        "memory": float(5 * GiB),
        "accelerator_type:T4": 0.001,
    }
    assert ray_bundle(placement.Bundle(0, 0, 0, 0, None)) == {"CPU": 0.0001}
