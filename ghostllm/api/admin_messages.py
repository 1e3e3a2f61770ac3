"""Between the accounts' records and the admin API's messages, both ways.

Out: a message carries the fields its proto declares, taken from the record's
`to_dict` (so a record field the proto does not name, whatever it is, never goes
out). In: the fields a request sets, as the repositories' keyword arguments, where
UNSET means "not given" and None "clear it" (the request's `clear` list).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from ghostllm.accounts import validation
from ghostllm.accounts.records import ApiKey, AuditEntry, AuditPage, Team, User, UserPage
from ghostllm.accounts.repository import UNSET, Unset
from ghostllm.errors import InvalidRequest
from ghostllm.v1 import admin_pb2

M = TypeVar("M", bound=Message)
# Integral numbers a JSON double holds exactly (Struct numbers are doubles).
_EXACT = 2**53


def fill(cls: type[M], data: Mapping[str, Any], **extra: Any) -> M:
    """`cls` from the entries of `data` (and `extra`) it has fields for; None leaves a field unset."""
    names = cls.DESCRIPTOR.fields_by_name
    return cls(**{k: v for k, v in {**data, **extra}.items() if k in names})


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def struct(data: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def plain(value: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as JSON data; whole numbers as ints (JSON has one number type, so 30 stays 30)."""
    data: dict[str, Any] = _integral(json_format.MessageToDict(value))
    return data


# Requests


def cleared(request: Any, allowed: Collection[str]) -> frozenset[str]:
    """The fields the request's `clear` names: each one that may be none, and not also given."""
    names = frozenset(request.clear)
    for name in sorted(names):
        if name not in allowed:
            raise InvalidRequest(
                f"clear: {name[:100]!r} cannot be cleared; these can: {', '.join(sorted(allowed))}",
                param="clear",
                code="invalid_value",
            )
        if _given(request, name):
            raise InvalidRequest(f"{name}: both given and cleared", param=name, code="invalid_value")
    return names


def _given(request: Any, name: str) -> bool:
    # A list has no presence: an empty one is "not given" (HasField refuses repeated fields).
    if request.DESCRIPTOR.fields_by_name[name].is_repeated:
        return len(getattr(request, name)) > 0
    return bool(request.HasField(name))


def given(request: Any, name: str, clear: Collection[str] = ()) -> Any:
    """The field's value when the request sets it, None when it clears it, else UNSET."""
    if name in clear:
        return None
    return getattr(request, name) if request.HasField(name) else UNSET


def optional(request: Any, name: str) -> Any:
    """The field's value when set, else None (for creates, where None is the default)."""
    return getattr(request, name) if request.HasField(name) else None


def id_field(request: Any, name: str) -> str | None:
    """An id field when set, checked to be an id (nothing else names a record here: not
    an email, not a team name)."""
    value: str | None = optional(request, name)
    return None if value is None else validation.record_id(name, value)


def given_id(request: Any, name: str, clear: Collection[str] = ()) -> Any:
    """`given`, for an id field."""
    value = given(request, name, clear)
    return validation.record_id(name, value) if isinstance(value, str) else value


def permissions(request: Any) -> dict[str, Any] | Unset:
    return plain(request.permissions) if request.HasField("permissions") else UNSET


def page_args(request: Any) -> dict[str, int]:
    """The repository's page and limit (its defaults when not given)."""
    return {name: getattr(request, name) for name in ("page", "limit") if request.HasField(name)}


# Records


def user(record: User) -> admin_pb2.User:
    return fill(admin_pb2.User, record.to_dict())


def team(record: Team) -> admin_pb2.Team:
    return fill(admin_pb2.Team, record.to_dict())


def api_key(record: ApiKey) -> admin_pb2.ApiKey:
    data = record.to_dict()
    return fill(admin_pb2.ApiKey, data, permissions=struct(data["permissions"]))


def audit_entry(record: AuditEntry) -> admin_pb2.AuditEntry:
    return fill(admin_pb2.AuditEntry, record.to_dict(), detail=struct(record.detail))


def pagination(page: UserPage | AuditPage) -> admin_pb2.Pagination:
    return admin_pb2.Pagination(page=page.page, limit=page.limit, total=page.total, pages=page.pages)
