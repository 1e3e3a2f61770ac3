"""The shared fidelity cases (../shared/fidelity) and the small expectation language they use.

The cases are third-party data: read where they lie, never copied into the repository. A
case names values by path (`choices[0].message.tool_calls[0].id`, `messages[?role==tool]`,
`systemInstruction|system_instruction.parts[0].text`: `|` offers spellings of one key) and
states what each must be: a plain value (deep equality, bools never equal to numbers),
"present", "absent", or one operator (`$in`, `$contains`, `$json`, `$len`, `$type`, `$ne`,
`$text`; the matrix adds `$mentions`; "$missing" stands for "no such value" inside them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest

from tests.support.procs import ROOT


def _shared() -> Path:
    """The leads' shared folder: $GHOSTLLM_SHARED_DIR, else `shared/` beside this checkout, else the
    workplace's /work/shared (a clone made elsewhere, e.g. CI's fresh one, still finds it)."""
    configured = os.environ.get("GHOSTLLM_SHARED_DIR")
    candidates = [Path(configured)] if configured else [ROOT.parent / "shared", Path("/work/shared")]
    for c in candidates:
        if (c / "fidelity").is_dir():
            return c / "fidelity"
    return candidates[0] / "fidelity"


SHARED: Final = _shared()
CASES_DIR: Final = SHARED / "cases"
HOLDOUT_DIR: Final = SHARED / "holdout"

Case = dict[str, Any]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


def load(folder: Path) -> list[Case]:
    """Every case under `folder`/<provider>/, in a stable order; [] when the folder is absent."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/*.json"))]


def require(folder: Path) -> None:
    """Skip when the shared data is absent, except under CI=true, where that fails."""
    if folder.is_dir():
        return
    reason = f"{folder} is absent (the shared fidelity data)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true: the fidelity cases must run")
    pytest.skip(reason)


def is_chat(case: Case) -> bool:
    return case.get("kind") == "chat"


def upstream_body(case: Case) -> bytes:
    """The bytes the provider answered: its exact text when the case kept it, else the JSON."""
    if "upstream_body_text" in case:
        return str(case["upstream_body_text"]).encode()
    response = case["upstream_response"]
    if isinstance(response, str):
        return response.encode()
    return json.dumps(response).encode()


# -- paths --------------------------------------------------------------------------------

_SEGMENT = re.compile(r"^([^\[\]]*)((?:\[[^\]]*\])*)$")
_INDEX = re.compile(r"\[([^\]]*)\]")


def _segments(path: str) -> list[str]:
    """Split on dots outside brackets (filters and keys never contain one inside)."""
    out, depth, current = [], 0, ""
    for ch in path:
        if ch == "." and depth == 0:
            out.append(current)
            current = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        current += ch
    out.append(current)
    return out


def resolve(doc: object, path: str) -> object:
    """The value at `path` in `doc`, or MISSING."""
    value = doc
    for segment in _segments(path):
        match = _SEGMENT.match(segment)
        if match is None:
            raise ValueError(f"bad path segment {segment!r} in {path!r}")
        names, selectors = match.group(1), match.group(2)
        if names:
            if not isinstance(value, Mapping):
                return MISSING
            value = next((value[n] for n in names.split("|") if n in value), MISSING)
        for selector in _INDEX.findall(selectors):
            value = _select(value, selector)
        if value is MISSING:
            return MISSING
    return value


def _select(value: object, selector: str) -> object:
    if not isinstance(value, list):
        return MISSING
    if selector.startswith("?"):
        key, _, wanted = selector[1:].partition("==")
        return next((v for v in value if isinstance(v, Mapping) and str(v.get(key)) == wanted), MISSING)
    index = int(selector)
    return value[index] if -len(value) <= index < len(value) else MISSING


# -- expectations ---------------------------------------------------------------------------

_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,),
    "object": (dict,),
    "array": (list,),
    "boolean": (bool,),
    "number": (int, float),
    "integer": (int,),
}


def equal(actual: object, expected: object) -> bool:
    """Deep equality where True is not 1 and an operator inside a value is applied."""
    if _is_operator(expected) or expected in ("present", "absent", "$missing"):
        return holds(actual, expected)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(expected, Mapping):
        return (
            isinstance(actual, Mapping)
            and actual.keys() == expected.keys()
            and all(equal(actual[k], expected[k]) for k in expected)
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(equal(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return actual == expected


def _is_operator(expected: object) -> bool:
    return isinstance(expected, Mapping) and len(expected) == 1 and next(iter(expected)).startswith("$")


def holds(actual: object, expected: object) -> bool:
    """Whether `actual` (a value or MISSING) meets `expected`."""
    if expected == "present":
        return actual is not MISSING
    if expected == "absent":
        return actual is MISSING or actual is None
    if expected == "$missing":
        return actual is MISSING
    if not _is_operator(expected):
        return actual is not MISSING and equal(actual, expected)
    assert isinstance(expected, Mapping)
    op, arg = next(iter(expected.items()))
    if op == "$in":
        return any(holds(actual, alternative) for alternative in arg)
    if op == "$ne":
        return not holds(actual, arg)
    if actual is MISSING:
        return False
    if op == "$contains":
        return isinstance(actual, str | list) and arg in actual
    if op == "$json":
        try:
            return isinstance(actual, str) and equal(json.loads(actual), arg)
        except ValueError:
            return False
    if op == "$len":
        return isinstance(actual, list | str | dict) and bool(len(actual) == arg)
    if op == "$type":
        return isinstance(actual, _TYPES[arg]) and not (arg in ("number", "integer") and isinstance(actual, bool))
    if op == "$text":
        return bool(text_of(actual) == arg)
    if op == "$mentions":
        # The matrix's own: the text appears somewhere in the value (a tool result's wrapping
        # is the adapter's choice).
        return arg in json.dumps(actual, ensure_ascii=False)
    raise ValueError(f"unknown operator {op}")


def text_of(value: object) -> str | None:
    """A content's text: the string itself, or the text blocks of a list joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, Mapping) and b.get("type") == "text" for b in value):
        return "".join(str(b.get("text", "")) for b in value)
    return None


def check(doc: object, expectations: Mapping[str, Any], what: str) -> list[str]:
    """One line per expectation `doc` does not meet."""
    problems = []
    for path, expected in expectations.items():
        actual = resolve(doc, path)
        if not holds(actual, expected):
            problems.append(f"{what} {path}: expected {_show(expected)}, got {_show(actual)}")
    return problems


def _show(value: object) -> str:
    text = repr(value) if value is MISSING else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 300 else text[:300] + "..."
