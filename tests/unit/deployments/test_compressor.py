"""The Compressor deployment class without a cluster: @serve.batch mixes callers' texts.

Only the replica context is faked (Serve's batch queue reads max_ongoing_requests from it);
batching and compression run the real code.
"""

from __future__ import annotations

import asyncio
import types

import pytest
from ray import serve

from deployments.compressor import CompressorDeployment


@pytest.fixture(scope="module")
def deployment(random_llmlingua2_dir):
    context = types.SimpleNamespace(
        _deployment_config=types.SimpleNamespace(max_ongoing_requests=256)
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(serve, "get_replica_context", lambda: context)
        yield CompressorDeployment(str(random_llmlingua2_dir), "cpu", torch_threads=None, rate=0.6)


@pytest.fixture
def batches(deployment, monkeypatch):
    """Record the texts of every model batch."""
    seen: list[list[str]] = []
    real = deployment.core.compress_batch

    def spy(texts, rate, force_tokens):
        seen.append(list(texts))
        return real(texts, rate, force_tokens)

    monkeypatch.setattr(deployment.core, "compress_batch", spy)
    return seen


def user_texts(user: str, n: int) -> list[str]:
    return [
        f"{user} said that message number {i} was about hiking and baking bread" for i in range(n)
    ]


async def test_texts_from_several_users_share_batches(deployment, batches):
    deployment.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 0.2})
    requests = {
        "alice": user_texts("alice", 5),
        "bob": user_texts("bob", 6),
        "carol": user_texts("carol", 4),
    }
    results = await asyncio.gather(*(deployment.compress(t) for t in requests.values()))

    assert sorted(len(b) for b in batches) == [7, 8]  # 15 texts, at most 8 per batch
    assert any(len({t.split()[0] for t in batch}) > 1 for batch in batches)
    for texts, out in zip(requests.values(), results, strict=True):
        assert [c.original for c in out] == texts  # each caller gets its own, in order
        direct = type(deployment.core).compress_batch(
            deployment.core, texts, 0.6, deployment.force_tokens
        )
        assert out == direct


async def test_batch_size_and_rate_change_live(deployment, batches):
    deployment.reconfigure({"max_batch_size": 3, "batch_wait_timeout_s": 0.1, "rate": 0.9})
    info = await deployment.info()
    assert (info["max_batch_size"], info["batch_wait_timeout_s"], info["rate"]) == (3, 0.1, 0.9)
    out = await deployment.compress(user_texts("dave", 7))
    assert max(len(b) for b in batches) <= 3 and sum(len(b) for b in batches) == 7
    kept_09 = sum(c.tokens_out for c in out)

    deployment.reconfigure({"rate": 0.3, "force_tokens": []})
    out = await deployment.compress(user_texts("dave", 7))
    assert sum(c.tokens_out for c in out) < kept_09
    assert (await deployment.info())["force_tokens"] == []
    with pytest.raises(ValueError):
        deployment.reconfigure({"rate": 0})


async def test_attention_windows_are_batched(deployment, monkeypatch):
    deployment.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 0.2})
    calls: list[int] = []
    real = deployment.core.consecutive_attention_batch

    def spy(windows):
        calls.append(len(windows))
        return real(windows)

    monkeypatch.setattr(deployment.core, "consecutive_attention_batch", spy)
    a = user_texts("alice", 4)
    b = user_texts("bob", 6)
    results = await asyncio.gather(
        deployment.consecutive_attention([a]), deployment.consecutive_attention([b])
    )
    assert calls == [2]
    assert [len(r[0]) for r in results] == [3, 5]
    assert results[0][0] == pytest.approx(real([a])[0], abs=1e-5)


def test_builder_applies_the_profile():
    from deployments.compressor import build_compressor
    from serve_app.profiles import ONE_LOOP_ENV, BatchedGroup

    group = BatchedGroup(num_cpus=0.5, max_ongoing_requests=128, batch_size=16, torch_threads=2)
    bound = build_compressor(group, "/models/x-bert-base-multilingual-cased", rate=0.5)
    d = bound._bound_deployment
    assert d.name == "Compressor"
    assert d.ray_actor_options == {"num_cpus": 0.5, "runtime_env": {"env_vars": ONE_LOOP_ENV}}
    assert d.max_ongoing_requests == 128
    assert d.user_config == {
        "max_batch_size": 16,
        "batch_wait_timeout_s": group.batch_wait_timeout_s,
    }
    assert d.init_args[:4] == ("/models/x-bert-base-multilingual-cased", "cpu", 2, 0.5)
