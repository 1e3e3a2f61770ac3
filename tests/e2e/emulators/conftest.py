"""The emulator each test module checks, one per module: the module names it in `EMULATOR`
(a ghostllm.emulators provider), and its own SDK client fixture points at `upstream.url`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.procs import Upstream, emulator


@pytest.fixture(scope="module")
def upstream(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    kind: str = request.module.EMULATOR
    with emulator(tmp_path_factory.mktemp(f"{kind}-emulator"), kind) as up:
        yield up
