"""`ghostllm model list|create|update|delete`: the catalogue's models in the store, managed
without a server (against the configured store directly, as the other commands).

Models in the store are merged over the YAML config's: one of the same id replaces it, and
deleting it brings the config's back. Workers pick a change up on their next poll of the
store (`catalogue.poll_s`); with Redis configured the command also announces it on the
change feed, so every worker of every replica reloads at once.

Heavy imports (store, accounts, redis, rich) happen inside the commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ghostllm.cli_output import leaf_maker, print_json, say, table

if TYPE_CHECKING:
    from ghostllm.accounts.models import ModelRecord, ModelRepository
    from ghostllm.accounts.records import ProviderRecord
    from ghostllm.config import Config

T = TypeVar("T")


def _load(args: argparse.Namespace) -> Config:
    from ghostllm.config import load_config

    return load_config(args.config)


def _run(config: Config, body: Callable[[ModelRepository], Awaitable[T]], *, announce: bool = False) -> T:
    """`body` against the store (SQLite migrated first, as serve does); `announce`: then tell
    the workers over Redis, when it is configured."""
    import asyncio

    from ghostllm.accounts.models import ModelRepository
    from ghostllm.store import make_store
    from ghostllm.store.startup import ensure_schema

    async def run() -> T:
        async with make_store(config.store, max_size=2) as store:
            for m in await ensure_schema(store):
                print(f"store: applied migration {m.version:04d}_{m.name}", file=sys.stderr)
            result = await body(ModelRepository(store))
        if announce and config.redis.url:
            from ghostllm.cluster.changes import CATALOGUE, ChangeFeed

            feed = ChangeFeed(config.redis)
            try:
                await feed.publish(CATALOGUE)  # a failure is logged (stderr) and the poll still applies
            finally:
                await feed.close()
        return result

    return asyncio.run(run())


def _reach(config: Config) -> str:
    if config.redis.url:
        return "announced on Redis: every worker reloads now"
    return f"workers pick it up within {config.catalogue.poll_s:g} s"


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _provider_note(config: Config, stored: list[ProviderRecord], provider_id: str) -> str:
    """Why the gateway would not serve a model of `provider_id`, or ""."""
    row = next((p for p in stored if p.id == provider_id), None)
    if row is not None:
        return "" if row.enabled else f"; note: provider {provider_id} is disabled in the store, so it is not served"
    if any(p.id == provider_id for p in config.providers):
        return ""
    return f"; note: provider {provider_id} is in neither the config nor the store: not served until it is"


async def _providers(repo: ModelRepository) -> list[ProviderRecord]:
    from ghostllm.accounts.providers import ProviderRepository

    return await ProviderRepository(repo.store).list_providers()


def _listing(config: Config, stored: list[ModelRecord], providers: list[ProviderRecord]) -> list[dict[str, Any]]:
    """Every model from either source, as the gateway merges them (the store wins)."""
    from ghostllm.routing.merge import StoredProvider, merge

    rows = [StoredProvider(p.id, p.enabled, p.provider_type, p.base_url, dict(p.config)) for p in providers]
    configs = [m.to_config() for m in stored]
    served = {m.id for m in merge(config, rows, configs).models}
    by_id = {m.id: ("config", m) for m in config.models} | {m.id: ("database", m) for m in configs}
    configured = {m.id for m in config.models}
    listing = []
    for model_id, (source, m) in by_id.items():
        sources = [s for s, there in (("config", model_id in configured), ("database", source == "database")) if there]
        listing.append(
            {
                "id": m.id,
                "provider": m.provider,
                "upstream_model": m.upstream,
                "context_length": m.context_length,
                "input_price_per_1m": m.input_price_per_1m,
                "output_price_per_1m": m.output_price_per_1m,
                "capabilities": list(m.capabilities),
                "owned_by": m.owned_by,
                # The database wins where both define a model.
                "sources": sources,
                "served": m.id in served,
            }
        )
    return listing


def _model_list(args: argparse.Namespace) -> int:
    config = _load(args)

    async def body(repo: ModelRepository) -> tuple[list[ModelRecord], list[ProviderRecord]]:
        return await repo.list_models(), await _providers(repo)

    stored, providers = _run(config, body)
    listing = _listing(config, stored, providers)
    if args.json:
        print_json({"models": listing})
        return 0
    columns = ["id", "provider", "upstream", "context", "in $/1M", "out $/1M", "capabilities", "source", "served"]
    rows = [
        [
            m["id"],
            m["provider"],
            m["upstream_model"],
            str(m["context_length"] or "-"),
            f"{m['input_price_per_1m']:g}",
            f"{m['output_price_per_1m']:g}",
            ",".join(m["capabilities"]),
            "+".join(m["sources"]),
            "yes" if m["served"] else "no",
        ]
        for m in listing
    ]
    table("models (config and database; the database wins)", columns, rows)
    return 0


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The model fields given on the command line."""
    given = {
        "provider": args.provider,
        "upstream_model": args.upstream_model,
        "context_length": args.context_length,
        "input_price_per_1m": args.input_price,
        "output_price_per_1m": args.output_price,
        "capabilities": _csv(args.capabilities),
        "owned_by": args.owned_by,
    }
    return {k: v for k, v in given.items() if v is not None}


def _model_create(args: argparse.Namespace) -> int:
    config = _load(args)
    fields = _fields(args)

    async def body(repo: ModelRepository) -> tuple[ModelRecord, str]:
        created = await repo.create_model(args.model, **fields)
        return created, _provider_note(config, await _providers(repo), created.provider_id)

    record, note = _run(config, body, announce=True)
    overrides = " (it replaces the config's model of that id)" if any(m.id == record.id for m in config.models) else ""
    say(
        args,
        {"model": record.to_dict()},
        f"created model {record.id} in the store, for provider {record.provider_id}{overrides}; {_reach(config)}{note}",
    )
    return 0


def _model_update(args: argparse.Namespace) -> int:
    config = _load(args)
    fields = _fields(args)

    async def body(repo: ModelRepository) -> tuple[ModelRecord, str]:
        updated = await repo.update_model(args.model, **fields)
        return updated, _provider_note(config, await _providers(repo), updated.provider_id)

    record, note = _run(config, body, announce=True)
    say(
        args,
        {"model": record.to_dict()},
        f"updated model {record.id} ({', '.join(sorted(fields))}); {_reach(config)}{note}",
    )
    return 0


def _model_delete(args: argparse.Namespace) -> int:
    config = _load(args)

    async def body(repo: ModelRepository) -> ModelRecord:
        return await repo.delete_model(args.model)

    record = _run(config, body, announce=True)
    back = "; the config's model of that id is served again" if any(m.id == record.id for m in config.models) else ""
    text = f"deleted model {record.id} from the store{back}; {_reach(config)}"
    say(args, {"model": record.to_dict(), "deleted": True}, text)
    return 0


def _model_options(p: argparse.ArgumentParser, *, create: bool) -> None:
    p.add_argument("model", metavar="ID", help="the id clients send as `model`")
    p.add_argument("--provider", required=create, help="a provider id from the config or the store")
    p.add_argument("--upstream-model", help="the provider's name for it (default: the id)")
    p.add_argument("--context-length", type=int, help="tokens (0: unknown)")
    p.add_argument("--input-price", "--input-price-per-1m", type=float, help="USD per 1M input tokens")
    p.add_argument("--output-price", "--output-price-per-1m", type=float, help="USD per 1M output tokens")
    p.add_argument(
        "--capabilities",
        help="comma-separated: chat,streaming,functions,vision,completions,embeddings"
        + (" (default: chat,streaming,functions,completions)" if create else ""),
    )
    p.add_argument("--owned-by", help="shown as owned_by by /v1/models (default: the provider id)")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The model commands; `common` carries --config."""
    leaf = leaf_maker(common)
    models = sub.add_parser("model", help="models of the catalogue in the store").add_subparsers(
        dest="action", required=True
    )
    leaf(models, "list", _model_list, "models from the config and the store, and whether each is served")
    _model_options(leaf(models, "create", _model_create, "add a model to the store"), create=True)
    _model_options(leaf(models, "update", _model_update, "change a model in the store"), create=False)
    p = leaf(models, "delete", _model_delete, "remove a model from the store")
    p.add_argument("model", metavar="ID")
