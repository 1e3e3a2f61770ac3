"""Key material, permissions and input validation: no store needed."""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from ghostllm.accounts import Permissions, Role, validation
from ghostllm.accounts.keys import digest, generate_key, looks_like_key, visible_prefix
from ghostllm.accounts.passwords import hash_password_sync
from ghostllm.config import parse_config
from ghostllm.errors import ConfigError, InvalidRequest
from ghostllm.protocol.endpoints import Endpoint


def test_keys_are_gk_plus_256_random_bits() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"gk-[A-Za-z0-9_-]{43}", key) and looks_like_key(key)
        assert digest(key) == hashlib.sha256(key.encode()).hexdigest() and len(digest(key)) == 64
        assert visible_prefix(key) == key[:11] and key.startswith(visible_prefix(key))


@pytest.mark.parametrize(
    "value", ["", "gk-", "sk-" + "a" * 43, "gk-" + "a" * 42, "gk-" + "a" * 42 + "'", "gk-" + "a" * 200]
)
def test_malformed_keys_are_recognised(value: str) -> None:
    assert not looks_like_key(value)


def test_seed_permissions_round_trip_and_answer() -> None:
    seed = {"chat_completions": True, "completions": True, "embeddings": True, "models": ["gpt-4"]}
    perms = Permissions.from_json(seed)
    assert perms.allows(Endpoint.CHAT, "gpt-4") and perms.allows(Endpoint.EMBEDDINGS, "gpt-4")
    assert not perms.allows(Endpoint.CHAT, "gpt-3.5") and perms.allows(Endpoint.MODELS)
    assert perms.to_json() == {**seed, "list_models": True}
    assert Permissions.from_json(perms.to_json()) == perms

    # Absent endpoint flags are not granted; absent models: any; "*": any.
    only_chat = Permissions.from_json({"chat_completions": True})
    assert only_chat.allows(Endpoint.CHAT, "anything") and not only_chat.allows(Endpoint.COMPLETIONS, "x")
    assert Permissions.from_json({"chat_completions": True, "models": ["*"]}).allows(Endpoint.CHAT, "x")
    assert not Permissions.from_json({"chat_completions": True, "models": []}).allows(Endpoint.CHAT, "x")
    assert not Permissions.from_json({"list_models": False}).allows(Endpoint.MODELS)
    assert all(Permissions().allows(e, "m") for e in Endpoint)


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ([], "permissions"),
        ({"admin": True}, "permissions.admin"),
        ({"chat_completions": "yes"}, "permissions.chat_completions"),
        ({"models": "gpt-4"}, "permissions.models"),
        ({"models": ["a b"]}, "permissions.models"),
        ({"models": ["m" * 201]}, "permissions.models"),
        ({"models": [f"m{i}" for i in range(101)]}, "permissions.models"),
    ],
)
def test_bad_permissions_name_the_field(data: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        Permissions.from_json(data)
    assert exc.value.param == param


def test_permissions_from_cli_names() -> None:
    perms = Permissions.from_names(["chat", "models"], ["gpt-4", "gpt-4"])
    assert perms.endpoints == {Endpoint.CHAT, Endpoint.MODELS} and perms.models == ("gpt-4",)
    with pytest.raises(InvalidRequest, match="endpoints: unknown 'admin'"):
        Permissions.from_names(["admin"], None)


def test_validation() -> None:
    assert validation.email("Alice@Example.COM") == "alice@example.com"
    assert validation.email("admin@localhost") == "admin@localhost"
    for bad in ["", "a", "a@", "@b", "a b@c.d", "a@b@c", "x'--@y.z", "a@" + "b" * 64, "a" * 65 + "@b.c"]:
        with pytest.raises(InvalidRequest, match=r"^email:"):
            validation.email(bad)
    assert validation.role("viewer") is Role.VIEWER
    with pytest.raises(InvalidRequest, match=r"^role: expected one of admin, user, viewer"):
        validation.role("root")
    assert validation.limit("rate_limit", 0) == 0 and validation.limit("rate_limit", None) is None
    for bad_int in [-1, 2**31, True]:
        with pytest.raises(InvalidRequest, match=r"^rate_limit:"):
            validation.limit("rate_limit", bad_int)
    assert validation.money("budget_limit", 5) == 5.0
    for bad_money in [-0.01, float("inf"), float("nan"), 1e12]:
        with pytest.raises(InvalidRequest, match=r"^budget_limit:"):
            validation.money("budget_limit", bad_money)
    assert validation.timestamp("expires_at", "2030-01-01") == datetime(2030, 1, 1, tzinfo=UTC)
    assert validation.timestamp("expires_at", "2030-01-01T02:00:00+02:00") == datetime(2030, 1, 1, tzinfo=UTC)
    assert validation.timestamp("x", datetime(2030, 1, 1, tzinfo=UTC) + timedelta(0)) is not None
    with pytest.raises(InvalidRequest, match=r"^expires_at:"):
        validation.timestamp("expires_at", "next tuesday")
    with pytest.raises(InvalidRequest, match=r"^user: expected an id"):
        validation.record_id("user", "1 OR 1=1")
    with pytest.raises(InvalidRequest, match=r"^name:"):
        validation.text("name", "a\nb", max_length=10)


def test_budget_period() -> None:
    assert validation.BUDGET_PERIODS == ("daily", "weekly", "monthly")
    assert validation.budget_period(None) is None
    for period in validation.BUDGET_PERIODS:
        assert validation.budget_period(period) == period
        assert validation.budget_period(period.upper()) == period  # any case, stored lower-case
    for bad in ["", "yearly", " daily", "daily ", "day", "hourly", "monthly; DROP TABLE users", "x" * 10_000]:
        with pytest.raises(InvalidRequest, match=r"^budget_period: expected one of daily, weekly, monthly$") as exc:
            validation.budget_period(bad)
        assert exc.value.param == "budget_period" and exc.value.code == "invalid_value"
    for wrong_type in [1, True, ["daily"]]:
        with pytest.raises(InvalidRequest, match=r"^budget_period:") as exc:
            validation.budget_period(wrong_type)  # type: ignore[arg-type]
        assert exc.value.code == "invalid_type"


@pytest.mark.parametrize("bad", [-1, -0.01, -1e-9, float("-inf"), float("inf"), float("nan"), 1e12, 1e300, True, "5"])
def test_budget_limit_is_a_finite_amount_from_zero(bad: object) -> None:
    with pytest.raises(InvalidRequest, match=r"^budget_limit:") as exc:
        validation.money("budget_limit", bad)  # type: ignore[arg-type]
    assert exc.value.param == "budget_limit"


def test_budget_limit_accepts_zero_to_below_a_trillion() -> None:
    assert validation.money("budget_limit", 0) == 0.0
    zero = validation.money("budget_limit", -0.0)
    assert zero is not None and math.copysign(1.0, zero) == 1.0  # -0.0 is kept as 0
    assert validation.money("budget_limit", 999_999_999_999.99) == 999_999_999_999.99
    assert validation.money("budget_limit", None) is None


def test_password_hashes_use_the_configured_cost() -> None:
    assert hash_password_sync("long enough", 4).startswith("$2b$04$")
    with pytest.raises(InvalidRequest, match=r"^password:"):
        hash_password_sync("x" * 73, 4)


def test_bcrypt_cost_is_configurable_and_checked() -> None:
    assert parse_config({}, env={}).accounts.bcrypt_cost == 12
    assert parse_config({"accounts": {"bcrypt_cost": 5}}, env={}).accounts.bcrypt_cost == 5
    assert parse_config({}, env={"GHOSTLLM_ACCOUNTS_BCRYPT_COST": "6"}).accounts.bcrypt_cost == 6
    with pytest.raises(ConfigError, match=r"accounts\.bcrypt_cost: expected 4 to 31"):
        parse_config({"accounts": {"bcrypt_cost": 3}}, env={})
    with pytest.raises(ConfigError, match=r"accounts\.bcrypt_cst"):
        parse_config({"accounts": {"bcrypt_cst": 5}}, env={})
