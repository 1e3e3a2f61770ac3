"""`ghostllm provider list|set-key`, `ghostllm secrets rotate`, `ghostllm config show|validate`.

Provider API keys set here are stored encrypted in the configured store (see
ghostllm.accounts.keyring for where the encryption key comes from); no command ever
prints one, and a key is read from stdin, never from the command line. Workers use a
stored key in place of the provider's `api_key_env` (the store wins; routing/merge.py).

Heavy imports (store, accounts, rich, yaml) happen inside the commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ghostllm.cli_output import leaf_maker, print_json, say, table

if TYPE_CHECKING:
    from ghostllm.config import Config
    from ghostllm.store import Store

T = TypeVar("T")
# Header names whose values `config show` never prints.
_SECRET_HEADER_WORDS = ("authorization", "cookie", "key", "token", "secret", "password")


def _load(args: argparse.Namespace) -> Config:
    from ghostllm.config import load_config
    from ghostllm.providers.factory import check_provider_types

    config = load_config(args.config)
    check_provider_types(config)
    return config


def _run(config: Config, body: Callable[[Store], Awaitable[T]]) -> T:
    import asyncio

    from ghostllm.store import make_store
    from ghostllm.store.startup import ensure_schema

    async def run() -> T:
        async with make_store(config.store, max_size=2) as store:
            for m in await ensure_schema(store):
                print(f"store: applied migration {m.version:04d}_{m.name}", file=sys.stderr)
            return await body(store)

    return asyncio.run(run())


# Providers


def _provider_list(args: argparse.Namespace) -> int:
    import os

    from ghostllm.accounts import ProviderRecord, ProviderRepository

    config = _load(args)

    async def body(store: Store) -> list[ProviderRecord]:
        return await ProviderRepository(store).list_providers()

    stored = {p.id: p for p in _run(config, body)}
    configured = {p.id: p for p in config.providers}
    listing: list[dict[str, Any]] = []
    for provider_id in [*configured, *sorted(set(stored) - set(configured))]:
        c, s = configured.get(provider_id), stored.get(provider_id)
        env_name = c.api_key_env if c is not None and c.api_key_env else None
        listing.append(
            {
                "id": provider_id,
                # The database wins where both define a provider.
                "type": s.provider_type if s is not None else c.type if c is not None else "",
                "base_url": s.base_url if s is not None else c.base_url if c is not None else "",
                "enabled": s.enabled if s is not None else True,
                "sources": [name for name, there in (("config", c), ("database", s)) if there is not None],
                "api_key_env": env_name,
                "api_key_env_set": bool(env_name and os.environ.get(env_name)),
                "api_key_stored": bool(s is not None and s.has_key),
                "encryption_key_id": s.key_encryption_id if s is not None else None,
            }
        )
    if args.json:
        print_json({"providers": listing})
        return 0
    rows = []
    for p in listing:
        key = []
        if p["api_key_env"]:
            key.append(f"env {p['api_key_env']} ({'set' if p['api_key_env_set'] else 'not set'})")
        if p["api_key_stored"]:
            key.append(f"stored, encrypted (key id {p['encryption_key_id']})")
        enabled = "yes" if p["enabled"] else "no"
        rows.append([p["id"], p["type"], p["base_url"], "+".join(p["sources"]), enabled, "; ".join(key) or "none"])
    table("providers", ["id", "type", "base_url", "source", "enabled", "api key"], rows)
    return 0


def _read_secret(provider_id: str) -> str:
    from ghostllm.errors import InvalidRequest

    if sys.stdin.isatty():
        import getpass

        line = getpass.getpass(f"API key for provider {provider_id}: ")
    else:
        line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise InvalidRequest("api_key: nothing on stdin", param="api_key")
    return line


def _provider_set_key(args: argparse.Namespace) -> int:
    from ghostllm.accounts import ProviderRecord, ProviderRepository
    from ghostllm.accounts.keyring import load_cipher
    from ghostllm.errors import NotFound

    config = _load(args)
    configured = {p.id: p for p in config.providers}
    secret = _read_secret(args.provider)

    async def body(store: Store) -> tuple[ProviderRecord, bool]:
        repo = ProviderRepository(store)
        existing = await repo.find_provider(args.provider)
        source = configured.get(args.provider)
        if existing is None and source is None:
            raise NotFound(f"no provider {args.provider!r} in the config or the store", param="provider")
        repo = ProviderRepository(store, load_cipher(config, create=True))
        created = existing is None
        if source is not None and existing is None:
            await repo.create_provider(source.id, provider_type=source.type, base_url=source.base_url, name=source.id)
        return await repo.set_key(args.provider, secret), created

    record, created = _run(config, body)
    made = " (provider row created from the config)" if created else ""
    say(
        args,
        {"provider": record.to_dict(), "created": created},
        f"stored the API key for provider {record.id}, encrypted (encryption key id {record.key_encryption_id}){made}."
        " Running workers use it within seconds.",
    )
    return 0


# Secrets


def _secrets_rotate(args: argparse.Namespace) -> int:
    from ghostllm.accounts.keyring import ENV_KEY, ENV_NEW_KEY
    from ghostllm.accounts.rotation import Rotation, rotate_secrets

    config = _load(args)

    async def body(store: Store) -> Rotation:
        return await rotate_secrets(store, config)

    done = _run(config, body)
    data = {
        "rotated": done.rotated,
        "old_key_id": done.old_key_id,
        "new_key_id": done.new_key_id,
        "key_file": None if done.key_file is None else str(done.key_file),
    }
    text = f"re-encrypted {done.rotated} stored secret(s) under encryption key id {done.new_key_id}"
    if done.key_file is None:
        text += (
            f" (was {done.old_key_id}). Now set {ENV_KEY} to the value of {ENV_NEW_KEY} and unset {ENV_NEW_KEY}"
            " everywhere (until then values under either key decrypt)."
        )
    else:
        text += f"; the new key is in {done.key_file} (mode 0600), the old key ({done.old_key_id}) is gone."
    say(args, data, text)
    return 0


# Config


def _redacted(config: Config) -> dict[str, Any]:
    """The effective config as plain data, with what could be secret hidden."""
    import dataclasses

    from ghostllm.store.url import parse_store_url

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.metadata.get("yaml", True)
            }
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    data: dict[str, Any] = plain(config)
    data["store"]["url"] = str(parse_store_url(config.store.url))
    for provider in data["providers"]:
        provider["headers"] = {
            name: "(hidden)" if any(w in name.lower() for w in _SECRET_HEADER_WORDS) else value
            for name, value in provider["headers"].items()
        }
    return data


def _config_show(args: argparse.Namespace) -> int:
    config = _load(args)
    data = _redacted(config)
    if args.json:
        print_json(data)
    else:
        import yaml

        print(f"# effective configuration: {config.source}, with environment overrides; secrets hidden")
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    return 0


def _config_validate(args: argparse.Namespace) -> int:
    config = _load(args)
    say(args, {"valid": True, "source": config.source}, f"{config.source}: valid")
    return 0


def _provider_test(args: argparse.Namespace) -> int:
    """Reachability, our credentials and the model list (one GET), then a one-token completion:
    the checks an operator runs after setting a provider up."""
    import asyncio
    import time

    from ghostllm.errors import GhostError, NotFound
    from ghostllm.protocol.endpoints import Endpoint
    from ghostllm.providers.base import Call
    from ghostllm.providers.factory import make_provider

    config = _load(args)
    try:
        provider_config = config.provider(args.provider)
    except KeyError:
        raise NotFound(f"no provider {args.provider!r} in {config.source or 'the config'}") from None
    configured = [m.upstream for m in config.models if m.provider == provider_config.id]

    async def run() -> list[dict[str, Any]]:
        provider = make_provider(provider_config)
        await provider.start()
        checks: list[dict[str, Any]] = []

        async def check(name: str, step: Callable[[], Awaitable[str]]) -> bool:
            started = time.monotonic()
            try:
                detail, ok = await step(), True
            except GhostError as exc:
                detail, ok = exc.message, False
            checks.append({"check": name, "ok": ok, "ms": round((time.monotonic() - started) * 1000, 1),
                           "detail": detail})  # fmt: skip
            return ok

        listed: list[str] = []

        async def models() -> str:
            listed.extend(await provider.list_models())
            return f"{len(listed)} model(s): {', '.join(listed[:5])}{' ...' if len(listed) > 5 else ''}"

        async def completion() -> str:
            model = (configured or listed or [""])[0]
            body = {"model": model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
            reply = await provider.complete(Endpoint.CHAT, body, model, Call(request_id="ghostllm-provider-test"))
            usage = reply.usage
            return f"{model}: answered" + (f" ({usage.total_tokens} tokens)" if usage else "")

        try:
            if await check("reachable, credentials accepted, model list", models):
                await check("one-token chat completion", completion)
        finally:
            await provider.close()
        return checks

    checks = asyncio.run(run())
    ok = all(c["ok"] for c in checks)
    if args.json:
        print_json({"provider": provider_config.id, "ok": ok, "checks": checks})
    else:
        table(
            f"provider {provider_config.id} ({provider_config.base_url})",
            ["check", "result", "ms", "detail"],
            [[c["check"], "ok" if c["ok"] else "FAILED", str(c["ms"]), c["detail"]] for c in checks],
        )
    return 0 if ok else 1


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The provider, secrets and config commands; `common` carries --config."""
    leaf = leaf_maker(common)

    providers = sub.add_parser("provider", help="providers and their API keys").add_subparsers(
        dest="action", required=True
    )
    leaf(providers, "list", _provider_list, "providers from the config and the store (never their keys)")
    p = leaf(providers, "set-key", _provider_set_key, "store a provider's API key, encrypted (read from stdin)")
    p.add_argument("provider", metavar="ID")
    p = leaf(providers, "test", _provider_test, "reach a configured provider: model list, then a one-token completion")
    p.add_argument("provider", metavar="ID")

    secrets = sub.add_parser("secrets", help="secrets stored encrypted").add_subparsers(dest="action", required=True)
    leaf(secrets, "rotate", _secrets_rotate, "re-encrypt every stored secret under a new encryption key")

    configs = sub.add_parser("config", help="the effective configuration").add_subparsers(dest="action", required=True)
    leaf(configs, "show", _config_show, "print the effective configuration (YAML; --json), secrets hidden")
    leaf(configs, "validate", _config_validate, "check a configuration file: exit 0 when valid, 2 with the error")
