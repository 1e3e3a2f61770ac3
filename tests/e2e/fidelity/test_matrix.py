"""The fidelity matrix (tests/fidelity): provider x feature x mode, one test per cell,
through Envoy with the openai SDK against the providers' emulators and, for the OpenAI
column, the development upstream. `python -m tests.fidelity` runs the same cells and
prints them as a table."""

from __future__ import annotations

import pytest

from tests.fidelity.environment import MatrixEnvironment
from tests.fidelity.matrix import FAIL, cells, run_cell


@pytest.mark.parametrize(("provider", "feature", "mode"), [pytest.param(*c, id="/".join(c)) for c in cells()])
def test_cell(provider: str, feature: str, mode: str, matrix_env: MatrixEnvironment) -> None:
    result = run_cell(matrix_env, provider, feature, mode)
    # n-a (the provider lacks the feature and the gateway said so with a clear 400) passes.
    assert result.status != FAIL, result.report()
