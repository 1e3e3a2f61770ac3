"""The audit trail: one audit_log row per mutation (who, what, to what, from where).
The detail names what changed, never a secret: no password, key or digest."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from ghostllm.store import Executor

# Fields whose values never go into the detail (only that they changed).
SECRET_FIELDS = frozenset({"password", "password_hash", "key", "key_hash", "secret", "api_key", "api_key_enc"})


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a user and/or key (the admin API), or the command line."""

    user_id: str | None = None
    key_id: str | None = None
    ip_address: str = ""
    via: str = "cli"


CLI = Actor()


def scrub(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: ("(changed)" if k in SECRET_FIELDS else v) for k, v in detail.items()}


async def record(
    store: Executor, actor: Actor, action: str, target_type: str, target_id: str, detail: dict[str, Any]
) -> None:
    body = json.dumps({"via": actor.via, **scrub(detail)}, sort_keys=True, default=str)
    await store.execute(
        "INSERT INTO audit_log (id, actor_user_id, actor_key_id, action, target_type, target_id, detail, ip_address)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (str(uuid.uuid4()), actor.user_id, actor.key_id, action, target_type, target_id, body, actor.ip_address),
    )
