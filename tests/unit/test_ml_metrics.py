"""BulkHistogram: a batch of observations lands in the same buckets as one observe each."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from unistack.ml.metrics import LATENCY_BUCKETS, BulkHistogram


def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {(s.name, s.labels.get("le", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")}


def test_bulk_observations_match_prometheus_clients_histogram() -> None:
    values = np.array([0.0, 0.0005, 0.0007, 0.001, 0.003, 0.05, 0.2, 9.0, 11.0, 0.001])
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("wait_seconds", "w", LATENCY_BUCKETS)
    ours.register(bulk)
    reference = Histogram("wait_seconds", "w", buckets=LATENCY_BUCKETS, registry=theirs)
    bulk.observe_many(values[:4])
    bulk.observe_many(values[4:])
    for value in values:
        reference.observe(float(value))
    ours_sum = samples(ours).pop(("wait_seconds_sum", ""))
    assert ours_sum == pytest.approx(samples(theirs)[("wait_seconds_sum", "")])
    assert {k: v for k, v in samples(ours).items() if k[0] != "wait_seconds_sum"} == {
        k: v for k, v in samples(theirs).items() if k[0] != "wait_seconds_sum"}
    assert samples(ours)[("wait_seconds_bucket", "0.001")] == 5  # le is inclusive
    assert samples(ours)[("wait_seconds_count", "")] == len(values)
