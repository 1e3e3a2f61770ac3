"""rows.stamp: the cached formatting gives exactly what the plain datetime formula gives."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from ghostllm.ledger import rows


def formula(unix: float) -> str:
    """How created_at was always formatted (what rows already in a store hold)."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_stamp_is_the_datetime_formula() -> None:
    rng = random.Random(7)
    values: list[float] = [0.0, -0.0, 1.0, -1.0, -1.5, 0.0005, 0.9995, 1e-7, -1e-7, 253402300799.999]
    for whole in (0, 1, 59, 86_399, 951_782_400, 1_700_000_000, 1_767_225_599, 4_102_444_799, -86_401):
        # Either side of the second, of each millisecond's edge, and where microseconds round up.
        for tail in (0.0, 1e-9, 1e-7, 4.9e-7, 5e-7, 5.1e-7, 0.000999, 0.001, 0.0015, 0.4995, 0.5, 0.9, 0.999,
                     0.9994, 0.9995, 0.9999, 0.99999, 0.9999994, 0.9999995, 0.9999996, 0.99999999):  # fmt: skip
            values += [whole + tail, whole - tail, float(whole) + tail]
    values += [rng.uniform(0, 4_102_444_800) for _ in range(20_000)]
    values += [1_767_225_000 + rng.random() * 1000 for _ in range(20_000)]  # near now: the cache's hits
    values += [rng.randrange(1_700_000_000_000, 1_800_000_000_000) / 1000 for _ in range(5_000)]  # whole ms
    values += [rng.randrange(1_700_000_000_000_000, 1_800_000_000_000_000) / 1e6 for _ in range(5_000)]  # whole us
    for unix in values:
        assert rows.stamp(unix) == formula(unix), unix


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e12, 1e20])
def test_stamp_refuses_what_datetime_refuses(bad: float) -> None:
    with pytest.raises(Exception) as expected:
        formula(bad)
    with pytest.raises(expected.type):
        rows.stamp(bad)
