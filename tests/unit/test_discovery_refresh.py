"""Model discovery refreshed in the background (issue 10): serve's rounds keep a silent
provider's last list and rewrite the file only on a change (server/discovery.py); a worker
follows the file, applying it to its last merge without the store (server/catalogue_sync.py).
The running stack: tests/e2e/server/test_discovery_refresh.py."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from ghostllm.config import parse_config
from ghostllm.errors import ConfigError
from ghostllm.providers.factory import make_provider
from ghostllm.routing.live import LiveCatalogue
from ghostllm.server import discovery
from ghostllm.server.catalogue_sync import CatalogueSync, DiscoveredFile
from ghostllm.server.discovery import Discovery, changed_lists
from ghostllm.store import Store

CONFIG = parse_config(
    {
        "catalogue": {"discovery_interval_s": 60},
        "providers": [
            {"id": "cloud", "base_url": "http://127.0.0.1:1/v1"},
            {"id": "local", "base_url": "http://127.0.0.1:2/v1", "discover_models": True},
            {"id": "other", "base_url": "http://127.0.0.1:3/v1", "discover_models": True},
        ],
        "models": [{"id": "gpt", "provider": "cloud"}],
    },
    env={},
)


def test_the_interval_is_configurable_and_must_be_positive() -> None:
    assert parse_config({}, env={}).catalogue.discovery_interval_s == 300
    env = {"GHOSTLLM_CATALOGUE_DISCOVERY_INTERVAL_S": "2.5"}
    assert parse_config({}, env=env).catalogue.discovery_interval_s == 2.5
    with pytest.raises(ConfigError, match=r"catalogue\.discovery_interval_s"):
        parse_config({"catalogue": {"discovery_interval_s": 0}}, env={})


def test_rounds_keep_a_silent_providers_list_and_write_only_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    answers: list[dict[str, list[str]]] = [
        {"local": ["b", "a"], "other": ["x"]},
        {"local": ["a", "b"], "other": ["x"]},  # the same lists in another order
        {"local": ["a", "c"]},  # other is silent: its list stays
        {},  # nobody answers
        {"local": [], "other": ["x"]},  # local answers with nothing: its models go
    ]

    async def fake(config: Any, timeout_s: float = 3.0) -> dict[str, list[str]]:
        return answers.pop(0)

    monkeypatch.setattr(discovery, "discover_configured", fake)
    path = tmp_path / "discovered.json"
    d = Discovery(CONFIG, path)
    caplog.set_level(logging.INFO, logger="ghostllm.server.discovery")
    try:
        d.start()
        assert orjson.loads(path.read_bytes()) == {"local": ["a", "b"], "other": ["x"]}

        async def rounds() -> list[bool]:
            return [await d.refresh() for _ in range(4)]

        assert asyncio.run(rounds()) == [False, True, False, True]
    finally:
        d.close()
    assert orjson.loads(path.read_bytes()) == {"local": [], "other": ["x"]}
    assert not list(tmp_path.glob("*.new"))
    text = caplog.text
    assert "provider local: added c; gone b" in text and "no answer from other; its last list stays" in text


def test_without_discovering_providers_the_file_is_empty_and_the_pause_a_sleep(tmp_path: Path) -> None:
    config = parse_config({"providers": [{"id": "cloud", "base_url": "http://127.0.0.1:1/v1"}]}, env={})
    d = Discovery(config, tmp_path / "discovered.json")
    d.start()
    d.run_for(0.01)
    d.close()
    assert orjson.loads((tmp_path / "discovered.json").read_bytes()) == {}


def test_changed_lists() -> None:
    assert changed_lists({"a": ["x", "y"]}, {"a": ["y", "z"], "b": ["q"]}) == [
        "provider a: added z; gone x",
        "provider b: added q",
    ]
    assert changed_lists({"a": ["x"]}, {"a": ["x"]}) == []


def replace_file(path: Path, data: dict[str, list[str]]) -> None:
    aside = path.with_name(path.name + ".new")
    aside.write_bytes(orjson.dumps(data))
    os.replace(aside, path)


def test_a_worker_parses_the_file_again_only_when_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "discovered.json"
    watch = DiscoveredFile(path)
    assert watch.read() is None  # not there (yet)
    replace_file(path, {"local": ["a"]})
    assert watch.read() == {"local": ["a"]}
    assert watch.read() is None
    replace_file(path, {"local": ["a"]})  # rewritten, the same
    assert watch.read() is None
    replace_file(path, {"local": ["b"]})  # the same size
    assert watch.read() == {"local": ["b"]}
    assert DiscoveredFile(None).read() is None


def test_a_worker_applies_new_lists_to_its_last_merge_without_the_store(tmp_path: Path) -> None:
    path = tmp_path / "discovered.json"
    replace_file(path, {"local": ["llama3"]})
    watch = DiscoveredFile(path)
    live = LiveCatalogue(CONFIG, make_provider, watch.read())
    # follow_discovery never touches the store: it is not there.
    sync = CatalogueSync(CONFIG, cast(Store, None), live, discovered=watch)

    async def follow(data: dict[str, list[str]] | None) -> list[str]:
        if data is not None:
            replace_file(path, data)
        await sync.follow_discovery()
        return [m.id for m in live.catalogue.models]

    assert asyncio.run(follow(None)) == ["gpt", "llama3"]
    kept = live.providers["cloud"]
    assert asyncio.run(follow({"local": ["llama3", "qwen"], "other": ["mistral"]})) == [
        "gpt",
        "llama3",
        "qwen",
        "mistral",
    ]
    assert live.providers["cloud"] is kept  # nothing rebuilt: only the catalogue changed
    assert asyncio.run(follow({"local": ["qwen"]})) == ["gpt", "qwen"]
    assert asyncio.run(follow(None)) == ["gpt", "qwen"]
