"""``python -m ghostllm.devupstream``: run the development upstream in the foreground."""

from __future__ import annotations

import argparse
import sys

from ghostllm.devupstream.server import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ghostllm.devupstream",
        description="Development-only fake OpenAI upstream for GhostLLM (never use in production).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11435)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between streamed chunks")
    args = parser.parse_args(argv)
    try:
        run(args.host, args.port, chunk_delay=args.chunk_delay_ms / 1000)
    except OSError as exc:
        print(f"ghostllm dev-upstream: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
