"""Session-wide real processes: a development upstream and a full GhostLLM stack."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.support.procs import Stack, dev_upstream, stack_config, start_stack, stop


@pytest.fixture(scope="session")
def upstream_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with dev_upstream(tmp_path_factory.mktemp("upstream")) as upstream:
        yield upstream.port


@pytest.fixture(scope="session")
def stack(upstream_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    s = start_stack(stack_config(upstream_port, tmp), upstream_port, tmp)
    try:
        yield s
    finally:
        stop(s.proc)


@pytest.fixture(scope="session")
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
def aclient(stack: Stack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.base_url, api_key="sk-test", max_retries=0, timeout=30)
