"""Exact cost: integer nano-USD from per-1M prices."""

from __future__ import annotations

import pytest

from ghostllm.config import ModelConfig
from ghostllm.gateway.cost import cost_nano_usd, nano_per_token

M = ModelConfig("m", "p", input_price_per_1m=0.15, output_price_per_1m=0.6, cached_input_price_per_1m=0.075)


@pytest.mark.parametrize(("price", "nano"), [(0.0, 0), (0.075, 75), (0.15, 150), (1.5, 1500), (2.5, 2500),
                                             (15.0, 15000), (0.0001, 0)])  # fmt: skip
def test_nano_per_token(price: float, nano: int) -> None:
    assert nano_per_token(price) == nano


def test_a_million_small_requests_sum_exactly() -> None:
    one = cost_nano_usd(M, 1, 1)
    assert one * 1_000_000 == cost_nano_usd(M, 1_000_000, 1_000_000) == 750_000_000  # 0.75 USD


def test_cached_prompt_tokens_at_the_cached_price() -> None:
    assert cost_nano_usd(M, 1000, 0, cached=400) == 600 * 150 + 400 * 75
    assert cost_nano_usd(M, 10, 0, cached=50) == 10 * 75  # never more cached than prompt
    plain = ModelConfig("m", "p", input_price_per_1m=0.15)
    assert cost_nano_usd(plain, 1000, 0, cached=400) == 1000 * 150
