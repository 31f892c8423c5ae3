"""The encoder-memory benchmark's batches and one in-process measurement at a tiny size."""

from benchmarks import encoder_memory


def test_batches_are_varied_and_the_same_for_a_seed():
    got = encoder_memory.batches(200, seed=3)
    assert got == encoder_memory.batches(200, seed=3) != encoder_memory.batches(200, seed=4)
    sizes = {len(b) for b in got}
    assert min(sizes) == 1 and max(sizes) == 32
    words = {len(t.split()) for b in got for t in b}
    assert min(words) == 3 and max(words) == 30


def test_measure_and_speed_encode_every_batch(tmp_path):
    body = encoder_memory.measure(False, 20, 1, tmp_path)
    assert body["memory_arena"] is False
    assert body["texts"] == sum(len(b) for b in encoder_memory.batches(20, 1))
    assert len(body["rss_mb"]) == 2 and all(r > 0 for r in body["rss_mb"])
    assert body["ms_per_text"] > 0
    timed = encoder_memory.speed(5, 1, tmp_path, rounds=2)
    assert {k: len(v) for k, v in timed.items()} == {"arena_on": 2, "arena_off": 2}
    assert all(ms > 0 for v in timed.values() for ms in v)
