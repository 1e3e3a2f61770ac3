"""One stack per test module: every provider in it (process starts are the cost here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fidelity.cases import CASES_DIR, HOLDOUT_DIR, load
from tests.fidelity.environment import CaseEnvironment, MatrixEnvironment, case_environment, matrix_environment


@pytest.fixture(scope="module")
def case_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaseEnvironment]:
    with case_environment(tmp_path_factory.mktemp("fidelity-cases"), load(CASES_DIR) + load(HOLDOUT_DIR)) as env:
        yield env


@pytest.fixture(scope="module")
def matrix_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixEnvironment]:
    with matrix_environment(tmp_path_factory.mktemp("fidelity-matrix")) as env:
        yield env
