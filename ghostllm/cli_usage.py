"""`ghostllm usage [--since 30d] [--by model|provider|user|key|team|endpoint|status|day] [--json]`:
what was used and what it cost, from the usage ledger in the configured store (no server needed).

Heavy imports (store, rich) happen inside the command."""

from __future__ import annotations

import argparse
from typing import Any

from ghostllm.cli_output import leaf_maker, print_json, table


def _usage(args: argparse.Namespace) -> int:
    import asyncio

    from ghostllm.config import load_config
    from ghostllm.ledger.queries import parse_since, usage
    from ghostllm.store import make_store
    from ghostllm.store.startup import ensure_schema

    config = load_config(args.config)
    since = parse_since(args.since)

    async def run() -> list[Any]:
        async with make_store(config.store, max_size=1) as store:
            await ensure_schema(store)
            return await usage(store, since, args.by)

    found = asyncio.run(run())
    if args.json:
        print_json({"since": since.isoformat(), "by": args.by, "rows": [r.to_dict() for r in found]})
        return 0
    title = f"usage since {since:%Y-%m-%d %H:%M} UTC" + (f", by {args.by}" if args.by else "")
    table(
        title,
        [args.by or "all", "requests", "prompt", "completion", "total", "cost USD"],
        [
            [
                r.group or "-",
                str(r.requests),
                str(r.prompt_tokens),
                str(r.completion_tokens),
                str(r.total_tokens),
                f"{r.cost_usd:.6f}",
            ]
            for r in found
        ],
    )
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    leaf = leaf_maker(common)
    p = leaf(sub, "usage", _usage, "requests, tokens and cost from the usage ledger")
    p.add_argument("--since", default="30d", help="30d, 12h, 90m or an ISO 8601 time (default 30d)")
    p.add_argument("--by", choices=["model", "provider", "user", "key", "team", "endpoint", "status", "day"])
