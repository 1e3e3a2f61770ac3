"""The metric families: the names we promise, and the bulk push standing in for `observe`."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from ghostllm.metrics.families import DURATION_BUCKETS, WORKER_FAMILIES, Families, add_observations, metric_names


def test_every_name_is_ours_unique_and_the_seeds_are_kept() -> None:
    names = metric_names()
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"ghostllm_[a-z_]+", n) for n in names)
    assert {"ghostllm_requests_total", "ghostllm_request_duration_seconds", "ghostllm_tokens_total"} <= set(names)
    counters = [f.name for f in WORKER_FAMILIES if f.kind == "counter"]
    assert all(n.endswith("_total") for n in counters)


def test_the_exposition_has_exactly_the_listed_families() -> None:
    registry = CollectorRegistry()
    Families(registry)
    text = generate_latest(registry).decode()
    # (_created: in-process counters only; the workers' multiprocess values have none.)
    exposed = {n for n in re.findall(r"^# TYPE (\S+) ", text, re.M) if not n.endswith("_created")}
    # The exporter adds ghostllm_envoy_up itself.
    assert exposed == {f.name for f in WORKER_FAMILIES}
    assert "ghostllm_envoy_up" in metric_names()


def test_no_family_takes_an_id_as_a_label() -> None:
    forbidden = {"user", "user_id", "key", "key_id", "api_key_id", "team", "team_id", "request_id", "client_ip"}
    assert not {label for f in WORKER_FAMILIES for label in f.labels} & forbidden


def test_bulk_observations_expose_what_observing_one_by_one_does() -> None:
    values = [0.001, 0.005, 0.0051, 0.3, 0.3, 2.5, 59.0, 601.0, 1e6]
    one, bulk = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("t_seconds", "t", ["m"], registry=one, buckets=DURATION_BUCKETS)
    h2 = Histogram("t_seconds", "t", ["m"], registry=bulk, buckets=DURATION_BUCKETS)
    for v in values:
        h1.labels("x").observe(v)
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    for v in values:
        counts[next((i for i, b in enumerate(DURATION_BUCKETS) if v <= b), len(DURATION_BUCKETS))] += 1
    add_observations(h2.labels("x"), counts, sum(values))

    def samples(r: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(r).decode().splitlines() if "_created" not in line]

    assert samples(one) == samples(bulk)
