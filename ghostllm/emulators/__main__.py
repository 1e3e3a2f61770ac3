"""`python -m ghostllm.emulators PROVIDER [--host H] --port N`: serve one emulator until SIGTERM."""

from __future__ import annotations

import argparse
import importlib

PROVIDERS = ("anthropic", "gemini", "ollama", "azure")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ghostllm.emulators")
    parser.add_argument("provider", choices=PROVIDERS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # Each module's run(host, port) serves until SIGTERM or SIGINT.
    importlib.import_module(f"ghostllm.emulators.{args.provider}").run(args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
