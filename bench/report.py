"""Plain-text tables for the benchmark report, and the JSON results file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Cell = str | int | float | None


def fmt(value: Cell, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return value


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]], digits: int = 2) -> str:
    cells = [[fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    sep = "  "

    def line(items: Sequence[str]) -> str:
        first = items[0].ljust(widths[0])
        rest = [s.rjust(w) for s, w in zip(items[1:], widths[1:], strict=True)]
        return "  " + sep.join([first, *rest]).rstrip()

    out = [title, line(list(headers)), "  " + sep.join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def section(text: str) -> None:
    print()
    print(text, flush=True)


def summary_block(cores: int, items: Sequence[tuple[str, str, str]]) -> str:
    """items: (label, value, target) with the target in brackets (empty for none)."""
    label_w = max(len(label) for label, _, _ in items)
    # Values with a target line up; a long free-form value (throughput) just follows its label.
    value_w = max((len(value) for _, value, target in items if target), default=0)
    lines = [f"summary ({cores} cores; targets in brackets)"]
    for label, value, target in items:
        shown = f"{value.rjust(value_w)}   [{target}]" if target else value
        lines.append(f"  {label.ljust(label_w)}   {shown}")
    return "\n".join(lines)


def _clean(obj: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(results: dict[str, Any], name: str = "latest.json") -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    ignore = RESULTS_DIR / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n!.gitignore\n")
    path = RESULTS_DIR / name
    path.write_text(json.dumps(_clean(results), indent=2, sort_keys=False) + "\n")
    return path
