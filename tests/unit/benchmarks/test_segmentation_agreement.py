from benchmarks.segmentation_agreement import agreement, boundaries
from serve_app.pipeline.buffers import BufferConfig, BufferedMessage
from serve_app.pipeline.intake import Cutter
from serve_app.pipeline.segmentation import SegmentationConfig
from tests.unit.ingest.doubles import bag_of_words


def test_agreement_counts_shared_boundaries_and_what_chance_would_share():
    reference = [{"b", "d"}, set()]
    found = [{"b", "c"}, {"x"}]
    out = agreement(reference, found, sizes=[5, 3])
    assert (out["boundaries"], out["reference_boundaries"]) == (3, 2)
    assert (out["precision"], out["recall"], out["f1"]) == (0.333, 0.5, 0.4)
    # 2 of 4 gaps drawn at random hit 2 * 2 / 4 = 1 reference boundary on average.
    assert out["f1_at_random"] == 0.4
    assert agreement([set()], [set()], [4])["f1"] == 1.0


async def test_boundaries_are_the_first_messages_of_later_topics():
    async def embed(texts: list[str]):
        return [bag_of_words(t) for t in texts]

    words = ["dog puppy leash"] * 3 + ["cello bow strings"] * 3
    session = [
        BufferedMessage(message_id=f"m{i}", seq=i, text=t, tokens=3, role="user", name=None, ts="")
        for i, t in enumerate(words)
    ]
    cut = Cutter(embed, SegmentationConfig())
    assert await boundaries([session], cut, BufferConfig(12, 512)) == [{"m3"}]
