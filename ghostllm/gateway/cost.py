"""What a request cost, exactly: integer nano-USD from the catalogue's prices.

Prices are USD per 1,000,000 tokens, so one token costs `price * 1000` nano-USD: an
integer for any price with up to three decimals (0.075 $/1M is 75 nano-USD a token), so
a million one-token requests sum to exactly what one million-token request costs. Cached
prompt tokens are billed at the model's cached-input price when it has one.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

from ghostllm.config import ModelConfig
from ghostllm.protocol.usage import NANO_PER_USD, Usage

__all__ = ["NANO_PER_USD", "cost_nano_usd", "nano_per_token", "usage_cost"]
_THOUSAND = Decimal(1000)


@lru_cache(maxsize=1024)  # a handful of prices, looked up on every request
def nano_per_token(price_per_1m: float) -> int:
    """A per-1M price as nano-USD per token (read through its decimal text, so 0.075 is 75)."""
    return int((Decimal(repr(price_per_1m)) * _THOUSAND).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def cost_nano_usd(model: ModelConfig, prompt: int, completion: int, cached: int | None = None) -> int:
    cached_price = model.cached_input_price_per_1m
    if cached and cached_price is not None:
        cached = min(cached, prompt)
        return (
            (prompt - cached) * nano_per_token(model.input_price_per_1m)
            + cached * nano_per_token(cached_price)
            + completion * nano_per_token(model.output_price_per_1m)
        )
    return prompt * nano_per_token(model.input_price_per_1m) + completion * nano_per_token(model.output_price_per_1m)


def usage_cost(model: ModelConfig, usage: Usage) -> int:
    return cost_nano_usd(model, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
