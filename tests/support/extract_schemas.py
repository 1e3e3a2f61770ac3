"""Regenerate tests/support/openai-schemas.json from the pinned OpenAI OpenAPI document.

Usage: .venv/bin/python tests/support/extract_schemas.py [path/to/openai-openapi.yaml]

Keeps only the response schemas the conformance tests use (and everything they reference),
drops annotation-only keywords to keep the file small, and rewrites the OpenAPI 3.0 style
``nullable: true`` (which a JSON Schema 2020-12 validator silently ignores) as
``anyOf: [<schema>, {"type": "null"}]``. Validation keywords are never weakened.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

SPEC = Path("/work/shared/conformance/openai-openapi.yaml")
OUT = Path(__file__).with_name("openai-schemas.json")
ROOTS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "Model",
    "ErrorResponse",
)
REF_PREFIX = "#/components/schemas/"

# Keywords whose value is a map of name -> schema, a single schema, or a list of schemas.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
)
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
# Annotations only: removing them cannot change what validates.
_DROP = {
    "description",
    "example",
    "examples",
    "title",
    "deprecated",
    "default",
    "discriminator",
    "externalDocs",
}


def convert(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema  # boolean schemas
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP or key.startswith("x-") or key == "nullable":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in _SCHEMA_ONE:
            out[key] = [convert(sub) for sub in value] if isinstance(value, list) else convert(value)
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [convert(sub) for sub in value]
        else:
            out[key] = value
    if schema.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


def refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX) :])
        for value in node.values():
            found |= refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= refs(value)
    return found


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    source = spec["components"]["schemas"]
    selected: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in selected:
            continue
        selected[name] = convert(source[name])
        todo.extend(refs(selected[name]) - selected.keys())
    return {"components": {"schemas": selected}}


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1]) if len(argv) > 1 else SPEC
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with spec_path.open("rb") as f:
        spec = yaml.load(f, Loader=loader)
    document = extract(spec)
    OUT.write_text(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {len(document['components']['schemas'])} schemas to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
