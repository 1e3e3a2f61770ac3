"""The two ways the account repositories write: one statement with the store's constraint
errors turned into the client's, and an UPDATE of named columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ghostllm.accounts import rows
from ghostllm.errors import AlreadyExists, InvalidRequest
from ghostllm.store import ConstraintViolation, DuplicateError, Executor


async def write(tx: Executor, sql: str, params: Sequence[Any], *, duplicate: AlreadyExists | None = None) -> int:
    """Run one statement; a duplicate becomes `duplicate` when given, another violation a 400."""
    try:
        return await tx.execute(sql, params)
    except DuplicateError:
        if duplicate is None:
            raise
        raise duplicate from None
    except ConstraintViolation as exc:
        raise InvalidRequest(f"rejected by the store: {exc}") from None


async def update(
    tx: Executor,
    table: str,
    record_id: str,
    changes: dict[str, Any],
    *,
    updated_at: bool = True,
    where: str = "",
    args: Sequence[Any] = (),
) -> int:
    """SET the given columns of one row (optionally only where `where` also holds); rows changed.
    Table and column names come from the code, never from input; values are parameters."""
    values = {**changes, "updated_at": rows.stamp(rows.now())} if updated_at else dict(changes)
    assignments = ", ".join(f"{column} = ?" for column in values)
    return await write(
        tx, f"UPDATE {table} SET {assignments} WHERE id = ?{where}", (*values.values(), record_id, *args)
    )
