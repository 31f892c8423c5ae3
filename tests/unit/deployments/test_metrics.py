"""The pipeline counters as Ray Serve metric objects (built without a cluster)."""

from __future__ import annotations

from ray.serve import metrics

from deployments.metrics import serve_pipeline_metrics
from serve_app.metrics import COUNTERS, RATIO_NAME, counter_name


def test_one_tagged_counter_per_field_and_the_ratio_gauge():
    m = serve_pipeline_metrics("t4", compression=False)
    assert set(m.counters) == set(COUNTERS)
    for field, counter in m.counters.items():
        assert isinstance(counter, metrics.Counter)
        assert counter.info["name"] == counter_name(field)
        assert counter.info["default_tags"] == {"profile": "t4", "compression": "off"}
    assert isinstance(m.ratio, metrics.Gauge)
    assert m.ratio.info["name"] == RATIO_NAME
    # Serve adds its own tags to the dict a metric holds: none may share one.
    tag_dicts = [c._default_tags for c in m.counters.values()] + [m.ratio._default_tags]
    assert len({id(t) for t in tag_dicts}) == len(tag_dicts)
