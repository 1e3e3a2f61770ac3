"""The `ghostllm` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from ghostllm import cli_accounts, cli_models, cli_providers, cli_usage
from ghostllm.config import Config, load_config
from ghostllm.errors import ConfigError, GhostError, StoreError


def _config(args: argparse.Namespace) -> Config:
    from ghostllm.providers.factory import check_provider_types

    config = load_config(args.config)
    check_provider_types(config)
    if getattr(args, "workers", None):
        config = replace(config, server=replace(config.server, workers=args.workers))
    return config


def _serve(args: argparse.Namespace) -> int:
    from ghostllm.server.supervisor import serve

    config = _config(args)
    logging.basicConfig(level=config.server.log_level, format="%(asctime)s serve %(levelname)s %(message)s")
    return serve(config, config.source)


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    from ghostllm.store import make_store

    config = load_config(args.config)

    async def run() -> None:
        status_only = args.action == "status"
        async with make_store(config.store, readonly=status_only, max_size=1) as store:
            if status_only:
                status = await store.status()
                print(f"store: {store.url}")
                print("\n".join(status.lines()))
                if status.newer_than_code:
                    print("the schema is newer than this version of GhostLLM")
                return
            applied = await store.migrate()
            for m in applied:
                print(f"applied {m.version:04d}_{m.name}")
            latest = max((m.version for m in store.migrations), default=0)
            summary = f"{len(applied)} migration(s) applied" if applied else "nothing to do"
            print(f"store: {store.url}: {summary}, schema at version {latest:04d}")

    asyncio.run(run())
    return 0


def _worker(args: argparse.Namespace) -> int:
    from ghostllm.server.worker import run_worker

    discovered = Path(args.discovered) if args.discovered else None
    run_worker(_config(args), args.port, discovered, Path(args.ready_file) if args.ready_file else None)
    return 0


def _dev_upstream(args: argparse.Namespace) -> int:
    from ghostllm.devupstream import run

    run(args.host, args.port, chunk_delay=args.chunk_delay_ms / 1000)
    return 0


def _certs(args: argparse.Namespace) -> int:
    from ghostllm.certs import CertError, make_dev_certs

    try:
        paths = make_dev_certs(Path(args.out), hosts=args.host or ("localhost", "127.0.0.1", "::1"), force=args.force)
    except (CertError, ValueError) as exc:
        print(f"ghostllm certs: {exc}", file=sys.stderr)
        return 1
    print(f"CA certificate (trust this in clients): {paths.ca_cert}")
    print(f"server certificate: {paths.cert}\nserver key:         {paths.key}")
    print("In ghostllm.yaml:\n  server:\n    tls:")
    print(f"      cert_file: {paths.cert}\n      key_file: {paths.key}")
    return 0


def _render_envoy(args: argparse.Namespace) -> int:
    import orjson

    from ghostllm.server.envoy import render_envoy_config

    config = _config(args)
    ports = [config.server.worker_base_port + i for i in range(config.server.worker_count)]
    sys.stdout.buffer.write(orjson.dumps(render_envoy_config(config, ports), option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ghostllm", description="GhostLLM: an enterprise LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", help="YAML config file (default: $GHOSTLLM_CONFIG or ./ghostllm.yaml)")

    p = sub.add_parser("serve", help="start Envoy and the worker processes")
    with_config(p)
    p.add_argument("--workers", type=int, help="worker processes (default: derived from the cores)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("migrate", help="apply the store's pending schema migrations ('status': list them)")
    with_config(p)
    p.add_argument("action", nargs="?", choices=["status"], help="list each migration as applied or pending")
    p.set_defaults(func=_migrate)

    p = sub.add_parser("worker", help="run one worker process (started by serve)")
    with_config(p)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--discovered", help="JSON file of the models serve discovers, by provider (followed)")
    p.add_argument("--ready-file", help="write the worker's pid here once it serves")
    p.set_defaults(func=_worker)

    p = sub.add_parser("dev-upstream", help="run the built-in development upstream (OpenAI wire format)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11435)
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between streamed chunks")
    p.set_defaults(func=_dev_upstream)

    p = sub.add_parser("certs", help="make a local CA and a localhost certificate for TLS in development")
    p.add_argument("--out", default="certs", help="output directory (default: ./certs)")
    p.add_argument("--host", action="append", help="name or IP for the certificate (repeatable)")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p.set_defaults(func=_certs)

    p = sub.add_parser("render-envoy", help="print the Envoy configuration serve would use")
    with_config(p)
    p.set_defaults(func=_render_envoy)

    common = argparse.ArgumentParser(add_help=False)
    with_config(common)
    cli_accounts.add_parsers(sub, common)
    cli_providers.add_parsers(sub, common)
    cli_models.add_parsers(sub, common)
    cli_usage.add_parsers(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"ghostllm: configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"ghostllm: store error: {exc}", file=sys.stderr)
        return 2
    except GhostError as exc:  # a bad value, an unknown user, a duplicate: the message names it
        print(f"ghostllm: {exc.message}", file=sys.stderr)
        return 1
    return code
