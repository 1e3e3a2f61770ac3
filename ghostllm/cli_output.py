"""How the command line shows results: JSON for scripts, rich tables and one line for people.
rich and orjson are imported only when used."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any


def print_json(data: object) -> None:
    import orjson

    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def say(args: argparse.Namespace, data: Any, text: str) -> None:
    """What a command did: its JSON for scripts (--json), else one line for people."""
    if args.json:
        print_json(data)
    else:
        print(text)


def table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = Table(title=title)
    for c in columns:
        shown.add_column(c, overflow="fold")
    for r in rows:
        shown.add_row(*r)
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=240)  # piped: whole ids and addresses, not an 80-column squeeze
    console.print(shown)


Leaf = Callable[[Any, str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def leaf_maker(common: argparse.ArgumentParser) -> Leaf:
    """Adds a command that takes --config (from `common`) and --json, and runs `func`."""
    out = argparse.ArgumentParser(add_help=False, parents=[common])
    out.add_argument("--json", action="store_true", help="machine-readable output")

    def leaf(group: Any, name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = group.add_parser(name, parents=[out], help=help)
        p.set_defaults(func=func)
        return p

    return leaf
