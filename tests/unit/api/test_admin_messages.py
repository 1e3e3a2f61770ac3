"""The admin API's conversions and request rules that need no stack (the e2e tests in
tests/e2e/api/test_admin.py cover the RPCs themselves)."""

from __future__ import annotations

from typing import Any

import pytest

from ghostllm.accounts.repository import UNSET
from ghostllm.api import admin_messages as msg
from ghostllm.api.admin_catalogue import check_definition, provider_key, redacted
from ghostllm.config import ProviderConfig
from ghostllm.errors import InvalidRequest
from ghostllm.v1 import admin_pb2


def test_fill_takes_only_the_fields_the_message_declares() -> None:
    data = {"id": "i", "name": "n", "key_hash": "secret", "user_id": None}
    out = msg.fill(admin_pb2.CreatedKey, data, key="gk-x")
    assert (out.id, out.name, out.key) == ("i", "n", "gk-x")
    assert not hasattr(out, "key_hash")


def test_struct_round_trip_keeps_whole_numbers_whole() -> None:
    data = {"timeout_s": 30, "ratio": 0.5, "nested": {"n": [1, 2.5, None, True]}}
    assert msg.plain(msg.struct(data)) == data
    assert type(msg.plain(msg.struct({"n": 30}))["n"]) is int


def test_given_and_cleared() -> None:
    request = admin_pb2.UpdateKeyRequest(id="k", name="n", clear=["rate_limit"])
    clear = msg.cleared(request, ("rate_limit", "budget_limit"))
    assert msg.given(request, "name", clear) == "n"
    assert msg.given(request, "rate_limit", clear) is None
    assert msg.given(request, "budget_limit", clear) is UNSET
    with pytest.raises(InvalidRequest, match="cannot be cleared") as exc:
        msg.cleared(admin_pb2.UpdateKeyRequest(clear=["name"]), ("rate_limit",))
    assert exc.value.param == "clear"
    with pytest.raises(InvalidRequest, match="both given and cleared"):
        msg.cleared(admin_pb2.UpdateKeyRequest(rate_limit=1, clear=["rate_limit"]), ("rate_limit",))


def test_id_fields_are_ids() -> None:
    assert msg.id_field(admin_pb2.CreateKeyRequest(name="k"), "user_id") is None
    with pytest.raises(InvalidRequest) as exc:
        msg.id_field(admin_pb2.CreateKeyRequest(user_id="someone@example.com"), "user_id")
    assert exc.value.param == "user_id"


def test_secret_looking_config_values_are_hidden() -> None:
    config = {"timeout_s": 3, "headers": {"Authorization": "Bearer x", "X-Api-Key": "k", "X-Team": "ml"}}
    assert redacted(config) == {
        "timeout_s": 3,
        "headers": {"Authorization": "(hidden)", "X-Api-Key": "(hidden)", "X-Team": "ml"},
    }


def test_the_api_key_leaves_the_config() -> None:
    config: dict[str, Any] = {"api_key": "sk-inner", "timeout_s": 3}
    assert provider_key(admin_pb2.PutProviderRequest(), config) == "sk-inner"
    assert config == {"timeout_s": 3}
    assert provider_key(admin_pb2.PutProviderRequest(api_key="sk-top"), None) == "sk-top"
    with pytest.raises(InvalidRequest, match="once"):
        provider_key(admin_pb2.PutProviderRequest(api_key="sk-a"), {"api_key": "sk-b"})
    with pytest.raises(InvalidRequest):
        provider_key(admin_pb2.PutProviderRequest(api_key="has spaces"), None)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"timeout": 30}, "timeout"),
        ({"timeout_s": "soon"}, "timeout_s"),
        ({"api_key_env": "GHOSTLLM_ADMIN_KEY"}, "api_key_env"),
    ],
)
def test_unusable_definitions_are_refused(config: dict[str, Any], message: str) -> None:
    fields = {"provider_type": "openai", "base_url": "http://127.0.0.1:9/v1", "config": config}
    with pytest.raises(InvalidRequest, match=message):
        check_definition("p", fields, None)


def test_usable_definition_over_the_configs() -> None:
    yaml = ProviderConfig(id="p", base_url="http://127.0.0.1:9/v1", api_key_env="P_KEY")
    fields = {"provider_type": "openai", "base_url": "http://127.0.0.1:8/v1", "config": {"timeout_s": 5}}
    check_definition("p", fields, yaml)
