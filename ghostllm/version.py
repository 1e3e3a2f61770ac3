"""The installed package's version: what /health reports and traces carry as service.version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _installed() -> str:
    try:
        return version("ghostllm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0"


VERSION = _installed()
