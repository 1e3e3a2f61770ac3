"""google.protobuf.Value/Struct <-> plain Python, without json_format.

json_format walks descriptors in pure Python; these direct conversions are
several times faster and sit on the per-request path.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2


def value_to_py(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        n = v.number_value
        # JSON has one number type; keep integers integral for upstreams that check.
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_py(v.struct_value)
    if kind == "list_value":
        return [value_to_py(x) for x in v.list_value.values]
    return None


def struct_to_py(s: struct_pb2.Struct) -> dict[str, Any]:
    return {k: value_to_py(x) for k, x in s.fields.items()}


def py_to_value(obj: Any, out: struct_pb2.Value) -> None:
    if obj is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(obj, bool):
        out.bool_value = obj
    elif isinstance(obj, int | float):
        out.number_value = obj
    elif isinstance(obj, str):
        out.string_value = obj
    elif isinstance(obj, dict):
        py_to_struct(obj, out.struct_value)
    elif isinstance(obj, list | tuple):
        lv = out.list_value
        lv.SetInParent()
        for item in obj:
            py_to_value(item, lv.values.add())
    else:
        out.string_value = str(obj)


def py_to_struct(obj: dict[str, Any], out: struct_pb2.Struct) -> None:
    out.SetInParent()
    for k, v in obj.items():
        py_to_value(v, out.fields[k])
