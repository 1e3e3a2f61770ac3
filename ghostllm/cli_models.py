"""`ghostllm model list|create|update|delete`: the catalogue's models in the store, managed
without a server (against the configured store directly, as the other commands).

Models in the store are merged over the YAML config's: one of the same id replaces it, and
deleting it brings the config's back. A model has one deployment (--provider, --upstream-model)
or several (--deployment, repeated), a --strategy among them and --fallback models. Workers
pick a change up on their next poll of the store (`catalogue.poll_s`); with Redis configured
the command also announces it on the change feed, so every worker of every replica reloads
at once.

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


async def _notes(repo: ModelRepository, config: Config, record: ModelRecord) -> str:
    """Why some of the model's deployments or fallbacks would not be used, or ""."""
    stored = await _providers(repo)
    notes = [_provider_note(config, stored, p) for p in dict.fromkeys(d.provider for d in record.targets)]
    known = {m.id for m in config.models} | {m.id for m in await repo.list_models()}
    notes += [
        f"; note: fallback {f} is in neither the config nor the store: skipped unless a provider lists it"
        for f in record.fallbacks
        if f not in known
    ]
    return "".join(notes)


async def _providers(repo: ModelRepository) -> list[ProviderRecord]:
    from ghostllm.accounts.providers import ProviderRepository

    return await ProviderRepository(repo.store).list_providers()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def deployment_arg(text: str) -> dict[str, Any]:
    """--deployment PROVIDER[:UPSTREAM_MODEL[:WEIGHT]][,input_price=USD][,output_price=USD][,timeout=S]...
    (the timeouts: connect_timeout, ttft_timeout, idle_timeout, timeout; seconds).
    Upstream names may contain ':' (llama3:8b): a last part is the weight only when it is a
    number, so a name ending in ':<number>' is given with its weight (ollama:qwen:7:1)."""
    head, *options = text.split(",")
    provider, _, upstream = head.partition(":")
    weight = 1.0
    name, sep, last = upstream.rpartition(":")
    if sep and (number := _number(last)) is not None:
        upstream, weight = name, number
    found: dict[str, Any] = {"provider": provider, "upstream_model": upstream, "weight": weight}
    for option in options:
        key, eq, value = (part.strip() for part in option.partition("="))
        number = _number(value)
        if key not in DEPLOYMENT_OPTIONS or not eq or number is None:
            raise argparse.ArgumentTypeError(
                f"{option.strip()!r}: expected input_price=USD or output_price=USD (per 1M tokens), or "
                "connect_timeout, ttft_timeout, idle_timeout or timeout=SECONDS"
            )
        found[DEPLOYMENT_OPTIONS[key]] = number
    return found


# --deployment's options, by the deployment field each sets.
DEPLOYMENT_OPTIONS = {
    "input_price": "input_price_per_1m",
    "output_price": "output_price_per_1m",
    "connect_timeout": "connect_timeout_s",
    "ttft_timeout": "ttft_timeout_s",
    "idle_timeout": "idle_timeout_s",
    "timeout": "timeout_s",
}


def _listing(config: Config, stored: list[ModelRecord], providers: list[ProviderRecord]) -> list[dict[str, Any]]:
    """Every model from either source, as the gateway merges them (the store wins)."""
    import dataclasses

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
                "deployments": [dataclasses.asdict(d) for d in m.targets],
                "strategy": m.strategy,
                "fallbacks": list(m.fallbacks),
                "retries": m.retries,
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
    columns = ["id", "deployments", "routing", "context", "in $/1M", "out $/1M", "capabilities", "source", "served"]
    rows = [
        [
            m["id"],
            "\n".join(_shown(d) for d in m["deployments"]),
            _routing(m),
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


def _shown(d: dict[str, Any]) -> str:
    """A deployment in a table: its key, and its weight and prices when they are its own."""
    extra = [f"weight {d['weight']:g}"] if d["weight"] != 1 else []
    extra += [f"{k.split('_')[0]} ${d[k]:g}" for k in ("input_price_per_1m", "output_price_per_1m") if d[k] is not None]
    extra += [f"{k[:-2]} {d[k]:g}s" for k in DEPLOYMENT_OPTIONS.values() if k.endswith("_s") and d.get(k) is not None]
    return f"{d['provider']}/{d['upstream_model']}" + (f" ({', '.join(extra)})" if extra else "")


def _routing(m: dict[str, Any]) -> str:
    parts = [m["strategy"]] if len(m["deployments"]) > 1 or m["strategy"] != "priority" else []
    parts += [f"then {', '.join(m['fallbacks'])}"] if m["fallbacks"] else []
    parts += [f"retries {m['retries']}"] if m["retries"] is not None else []
    return "; ".join(parts) or "-"


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The model fields given on the command line."""
    from ghostllm.config import DeploymentConfig

    given = {
        "provider": args.provider,
        "upstream_model": args.upstream_model,
        "context_length": args.context_length,
        "input_price_per_1m": args.input_price,
        "output_price_per_1m": args.output_price,
        "capabilities": _csv(args.capabilities),
        "owned_by": args.owned_by,
        "deployments": [DeploymentConfig(**d) for d in args.deployment] if args.deployment else None,
        "strategy": args.strategy,
        "fallbacks": args.fallback,
        "retries": args.retries,
    }
    fields = {k: v for k, v in given.items() if v is not None}
    # Cleared (update only): None is what the repository takes as "none".
    for name, flag in (("fallbacks", "--fallback"), ("retries", "--retries")):
        if getattr(args, f"no_{name}", False):
            if name in fields:
                raise SystemExit(f"ghostllm model: {flag} and --no-{name}: give one of them")
            fields[name] = None
    return fields


def _model_create(args: argparse.Namespace) -> int:
    config = _load(args)
    fields = _fields(args)

    async def body(repo: ModelRepository) -> tuple[ModelRecord, str]:
        created = await repo.create_model(args.model, **fields)
        return created, await _notes(repo, config, created)

    record, note = _run(config, body, announce=True)
    overrides = " (it replaces the config's model of that id)" if any(m.id == record.id for m in config.models) else ""
    providers = list(dict.fromkeys(d.provider for d in record.targets))
    served_by = f"provider {providers[0]}" if len(providers) == 1 else f"providers {', '.join(providers)}"
    say(
        args,
        {"model": record.to_dict()},
        f"created model {record.id} in the store, for {served_by}{overrides}; {_reach(config)}{note}",
    )
    return 0


def _model_update(args: argparse.Namespace) -> int:
    config = _load(args)
    fields = _fields(args)

    async def body(repo: ModelRepository) -> tuple[ModelRecord, str]:
        updated = await repo.update_model(args.model, **fields)
        return updated, await _notes(repo, config, updated)

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
    from ghostllm.config import STRATEGIES

    p.add_argument("model", metavar="ID", help="the id clients send as `model`")
    p.add_argument("--provider", help="a provider id from the config or the store (or give --deployment)")
    p.add_argument("--upstream-model", help="the provider's name for it (default: the id)")
    p.add_argument(
        "--deployment",
        action="append",
        type=deployment_arg,
        metavar="PROVIDER[:UPSTREAM[:WEIGHT]][,input_price=USD][,output_price=USD][,ttft_timeout=S]...",
        help="one deployment, repeated for several (instead of --provider/--upstream-model"
        + ("" if create else "; replaces them all")
        + "); a weight is weighted routing's share, prices are per 1M tokens; connect_timeout, ttft_timeout, "
        "idle_timeout and timeout (seconds) override the provider's",
    )
    p.add_argument("--strategy", choices=STRATEGIES, help="how a request picks a deployment (default: priority)")
    p.add_argument(
        "--fallback",
        action="append",
        metavar="MODEL",
        help="a model tried when every deployment failed, repeated for several, in order"
        + ("" if create else " (replaces them)"),
    )
    p.add_argument("--retries", type=int, help="retries on one deployment before the next (default: routing.retries)")
    if not create:
        p.add_argument("--no-fallbacks", action="store_true", help="remove every fallback")
        p.add_argument("--no-retries", action="store_true", help="back to routing.retries")
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
