"""Waiting for something another process does, without a timing assertion: poll until it is
seen, and fail (saying what was last seen) only after a generous deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], within_s: float = 15.0, every_s: float = 0.1) -> T:
    """The first truthy value of `check`, polled until `within_s` has passed."""
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not seen within {within_s} s (last: {value!r})"
        time.sleep(every_s)
