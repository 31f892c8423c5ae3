"""The pipeline counters of `serve_app.metrics` as Ray Serve metric objects."""

from __future__ import annotations

from ray.serve import metrics

from serve_app.metrics import (
    COUNTERS,
    RATIO_DESCRIPTION,
    RATIO_NAME,
    TAG_KEYS,
    PipelineMetrics,
    counter_name,
    metric_tags,
)


def serve_pipeline_metrics(profile: str, compression: bool) -> PipelineMetrics:
    """Counters and the ratio gauge, tagged with the profile and compression on/off.

    Serve's wrappers add the deployment, replica and application tags themselves, to the dict
    each metric is given: so each gets a copy of the tags.
    """
    tags = metric_tags(profile, compression)
    counters = {}
    for name, description in COUNTERS.items():
        counter = metrics.Counter(counter_name(name), description=description, tag_keys=TAG_KEYS)
        counter.set_default_tags(dict(tags))
        counters[name] = counter
    ratio = metrics.Gauge(RATIO_NAME, description=RATIO_DESCRIPTION, tag_keys=TAG_KEYS)
    ratio.set_default_tags(dict(tags))
    return PipelineMetrics(counters, ratio)
