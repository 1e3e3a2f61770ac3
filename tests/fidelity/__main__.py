"""`python -m tests.fidelity` (`make fidelity`): start the emulators, the development upstream
and one stack, run every matrix cell, print the matrix; exit 1 if any cell fails.

Options: `--provider P` / `--feature F` (repeatable) to run part of it, `--markdown` for
the table as Markdown (the README's), `-v` for every problem of a failed cell.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tests.fidelity.environment import matrix_environment
from tests.fidelity.features import FEATURES, MODES, STREAMING
from tests.fidelity.matrix import FAIL, NA, PASS, PROVIDERS, Result, cells, run_cell

_MARKS = {PASS: "pass", FAIL: "FAIL", NA: "n-a"}
_STYLES = {PASS: "green", FAIL: "bold red", NA: "yellow"}
_SHORT = {"non-streaming": "json", STREAMING: "stream"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", action="append", choices=PROVIDERS)
    parser.add_argument("--feature", action="append", choices=[f.key for f in FEATURES])
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    providers = tuple(args.provider or PROVIDERS)
    wanted = [(p, f, m) for p, f, m in cells(providers) if not args.feature or f in args.feature]
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="ghostllm-fidelity-") as tmp:
        console.print(f"starting {', '.join(providers)} and a stack ...")
        with matrix_environment(Path(tmp), providers) as env:
            results = [run_cell(env, p, f, m) for p, f, m in wanted]
    # Wide enough for ten result columns even when piped.
    out = Console(width=max(Console().width, 150))
    if args.markdown:
        out.print(markdown(results, providers), markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(table(results, providers))
    _details(out, results, args.verbose)
    return 1 if any(r.status == FAIL for r in results) else 0


def _rows(results: list[Result], providers: tuple[str, ...]) -> Iterator[tuple[str, list[Result | None]]]:
    """Each feature that was run, with its result per provider and mode (None: not run):
    what both renderings show, each marking a result its own way."""
    grid = {(r.provider, r.feature, r.mode): r for r in results}
    for f in FEATURES:
        if any(r.feature == f.key for r in results):
            yield f.title, [grid.get((p, f.key, m)) for p in providers for m in MODES]


def table(results: list[Result], providers: tuple[str, ...]) -> Table:
    t = Table(title="GhostLLM fidelity matrix (through Envoy, openai SDK; json = non-streaming)")
    t.add_column("feature")
    for p in providers:
        for m in MODES:
            t.add_column(f"{p}\n{_SHORT[m]}", justify="center")
    for title, row in _rows(results, providers):
        t.add_row(title, *("-" if r is None else f"[{_STYLES[r.status]}]{_MARKS[r.status]}[/]" for r in row))
    return t


def markdown(results: list[Result], providers: tuple[str, ...]) -> str:
    head = ["feature", *(f"{p} {_SHORT[m]}" for p in providers for m in MODES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for title, row in _rows(results, providers):
        lines.append("| " + " | ".join([title, *("-" if r is None else _MARKS[r.status] for r in row)]) + " |")
    return "\n".join(lines)


def _details(out: Console, results: list[Result], verbose: bool) -> None:
    for r in results:
        if r.status == NA:
            out.print(f"[yellow]n-a[/] {r.provider} / {r.feature} / {r.mode}: {escape(r.note)}", highlight=False)
    failed = [r for r in results if r.status == FAIL]
    for r in failed:
        problems = r.problems if verbose else r.problems[:2]
        more = "" if verbose or len(r.problems) <= 2 else f"\n    ... {len(r.problems) - 2} more (-v)"
        body = "\n    ".join(escape(p[:600]) for p in problems)
        out.print(
            f"[bold red]FAIL[/] {r.provider} / {r.feature} / {r.mode}\n    {body}{more}", highlight=False, markup=True
        )
    passed = sum(r.status == PASS for r in results)
    na = sum(r.status == NA for r in results)
    out.print(f"{passed} pass, {len(failed)} fail, {na} n-a of {len(results)} cells")


if __name__ == "__main__":
    sys.exit(main())
