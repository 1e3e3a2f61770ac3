"""`ghostllm user|team|key ...` as real processes against a SQLite store in tmp_path."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import ROOT


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    config = tmp_path / "g.yaml"
    config.write_text(
        yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path / 'data' / 'g.db'}"}, "accounts": {"bcrypt_cost": 4}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTLLM_") and k != "DATABASE_URL"}

    def run(*args: str, stdin: str = "", ok: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [sys.executable, "-m", "ghostllm", *args, "-c", str(config)],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=60,
        )
        if ok:
            assert out.returncode == 0, out.stderr
            assert "Traceback" not in out.stderr
        return out

    return run


def as_json(out: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(out.stdout)


def test_user_team_key_lifecycle(cli: Any, tmp_path: Path) -> None:
    out = cli("team", "create", "platform", "--budget-limit", "100")
    assert out.stdout.startswith("created team platform (")
    assert "applied migration 0001_initial" in out.stderr  # the embedded store is migrated first

    out = cli("user", "create", "--email", "Alice@Example.com", "--username", "alice", "--team", "platform",
              "--password-stdin", "--budget-limit", "20", stdin="correct horse battery\n")  # fmt: skip
    assert out.stdout.startswith("created user alice@example.com (") and "role user" in out.stdout
    bob = as_json(cli("user", "create", "--email", "bob@example.com", "--role", "viewer", "--json"))
    assert bob["role"] == "viewer" and bob["has_password"] is False and "password_hash" not in bob

    listing = as_json(cli("user", "list", "--json"))
    assert [u["email"] for u in listing["users"]] == ["alice@example.com", "bob@example.com"]
    assert listing["pagination"] == {"page": 1, "limit": 20, "total": 2, "pages": 1}
    assert as_json(cli("user", "list", "--json", "--search", "bob"))["pagination"]["total"] == 1
    assert "alice@example.com" in cli("user", "list").stdout  # the table

    limits = ("--rpm", "60", "--tpm", "5000", "--expires", "2031-01-01T00:00:00Z")
    out = cli("key", "create", "--user", "alice@example.com", "--name", "ci", "--models", "gpt-4,dev-echo",
              "--endpoints", "chat,models", *limits)  # fmt: skip
    secret = out.stdout.splitlines()[1]
    assert secret.startswith("gk-") and len(secret) >= 46 and "not shown again" in out.stdout
    service = as_json(cli("key", "create", "--team", "platform", "--name", "svc", "--json"))
    assert service["key"].startswith("gk-") and service["user_id"] is None and service["team_id"]

    keys = as_json(cli("key", "list", "--json"))["keys"]
    assert [k["name"] for k in keys] == ["ci", "svc"] and all("key" not in k for k in keys)
    ci = keys[0]
    assert ci["permissions"] == {
        "chat_completions": True,
        "completions": False,
        "embeddings": False,
        "list_models": True,
        "models": ["gpt-4", "dev-echo"],
    }
    assert (ci["rate_limit"], ci["tpm_limit"], ci["expires_at"]) == (60, 5000, "2031-01-01T00:00:00Z")
    assert [k["name"] for k in as_json(cli("key", "list", "--user", "bob@example.com", "--json"))["keys"]] == []
    table = cli("key", "list").stdout
    assert "ci" in table and secret not in table and secret[:11] in table

    updated = as_json(cli("key", "update", ci["id"], "--rpm", "10", "--all-models", "--json"))
    assert updated["rate_limit"] == 10 and "models" not in updated["permissions"]
    out = cli("key", "revoke", ci["id"])
    assert out.stdout.startswith("revoked key 'ci'")
    assert as_json(cli("key", "list", "--json"))["keys"][0]["is_active"] is False

    out = cli("user", "update", "bob@example.com", "--role", "admin", "--inactive", "--json")
    assert as_json(out)["role"] == "admin" and as_json(out)["is_active"] is False

    # Nothing secret in the database file.
    db = tmp_path / "data" / "g.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        dump = "\n".join(conn.iterdump())
    assert secret not in dump and service["key"] not in dump and "correct horse" not in dump

    out = cli("user", "delete", "alice@example.com")
    assert "deleted user alice@example.com" in out.stdout
    assert [k["id"] for k in as_json(cli("key", "list", "--json"))["keys"]] == [service["id"]]  # hers went with her
    team = as_json(cli("team", "update", "platform", "--description", "infra", "--rpm", "60", "--no-budget-limit",
                       "--json"))  # fmt: skip
    assert (team["description"], team["rate_limit"], team["budget_limit"]) == ("infra", 60, None)
    out = cli("team", "delete", "platform")
    assert "deleted team platform" in out.stdout
    assert as_json(cli("team", "list", "--json")) == {"teams": []}
    assert as_json(cli("key", "list", "--json")) == {"keys": []}


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("user", "update", "nobody@example.com", "--role", "admin"), "", "ghostllm: no user 'nobody@example.com'"),
        (("user", "create", "--email", "not-an-email"), "", "ghostllm: email: expected an address"),
        (("user", "create", "--email", "a@example.com", "--budget-limit", "-3"), "", "ghostllm: budget_limit:"),
        (
            ("user", "create", "--email", "a@example.com", "--password-stdin"),
            "",
            "ghostllm: password: nothing on stdin",
        ),
        (("key", "create", "--user", "ghost@example.com", "--name", "k"), "", "ghostllm: no user 'ghost@example.com'"),
        (("key", "create", "--team", "nope", "--name", "k"), "", "ghostllm: no team 'nope'"),
        (("key", "revoke", "not-an-id"), "", "ghostllm: key: expected an id"),
        (
            ("key", "create", "--user", "x@example.com", "--name", "k", "--endpoints", "chat,admin"),
            "",
            "ghostllm: endpoints: unknown",
        ),
    ],
)
def test_failures_exit_non_zero_with_one_line(cli: Any, args: tuple[str, ...], stdin: str, message: str) -> None:
    out = cli(*args, stdin=stdin, ok=False)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if not line.startswith("store: applied")]
    assert len(lines) == 1 and lines[0].startswith(message), out.stderr
    assert out.stdout == ""


def test_duplicates_and_bad_arguments(cli: Any) -> None:
    cli("user", "create", "--email", "a@example.com")
    out = cli("user", "create", "--email", "A@example.com", ok=False)
    assert out.returncode == 1 and out.stderr.strip() == "ghostllm: a user with email 'a@example.com' already exists"
    cli("team", "create", "t")
    out = cli("team", "create", "t", ok=False)
    assert out.returncode == 1 and "a team named 't' already exists" in out.stderr
    out = cli("key", "create", "--user", "a@example.com", "--name", "k", "--rpm", "many", ok=False)
    assert out.returncode == 2 and "invalid int value" in out.stderr  # argparse's own check
    out = cli("key", "create", "--name", "k", ok=False)
    assert out.returncode == 2 and "one of the arguments --user --team is required" in out.stderr


def test_the_last_admin_is_refused_in_one_line(cli: Any) -> None:
    cli("user", "create", "--email", "root@example.com", "--role", "admin")
    refusal = "ghostllm: user root@example.com is the last active admin: make another user admin first"
    for args in (("delete", "root@example.com"), ("update", "root@example.com", "--role", "user"),
                 ("update", "root@example.com", "--inactive")):  # fmt: skip
        out = cli("user", *args, ok=False)
        assert (out.returncode, out.stderr.strip(), out.stdout) == (1, refusal, ""), out.stderr
    cli("user", "create", "--email", "deputy@example.com", "--role", "admin")
    assert "deleted user root@example.com" in cli("user", "delete", "root@example.com").stdout


def test_refuses_a_pending_postgres_schema(tmp_path: Path, postgres_url: str) -> None:
    config = tmp_path / "pg.yaml"
    config.write_text(yaml.safe_dump({"store": {"url": postgres_url}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTLLM_") and k != "DATABASE_URL"}
    out = subprocess.run(
        [sys.executable, "-m", "ghostllm", "user", "list", "-c", str(config)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "pending migration(s)" in out.stderr and "run `ghostllm migrate`" in out.stderr
