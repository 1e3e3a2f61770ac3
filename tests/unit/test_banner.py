"""The start-up banner: its examples use the key the operator has."""

from __future__ import annotations

from pathlib import Path

from ghostllm.auth.bootstrap import Bootstrap
from ghostllm.config import parse_config
from ghostllm.server.supervisor import describe

RAW = {"providers": [{"id": "p", "base_url": "http://127.0.0.1:1/v1"}], "models": [{"id": "m", "provider": "p"}]}


def test_first_start_shows_the_new_key_once_and_uses_it(tmp_path: Path) -> None:
    text = describe(parse_config(RAW, env={}), [], Bootstrap("gk-new", tmp_path / "admin-key"))
    assert "shown once" in text and text.count("gk-new") == 3  # the line, curl and python


def test_later_starts_point_at_the_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text("gk-old\n")
    text = describe(parse_config(RAW, env={}), [], Bootstrap(None, key_file))
    assert "gk-old" not in text and f"$(cat {key_file})" in text


def test_auth_off_is_said_loudly() -> None:
    text = describe(parse_config({**RAW, "auth": {"enabled": False}}, env={}), [], None)
    assert "WARNING: authentication is OFF" in text
