"""The in-process backend, for a gateway without Redis: the same rules as the Lua script,
on dictionaries. Exact within one process; every worker process keeps its own counters,
so with N workers a limit of L admits up to N x L (the README says so)."""

from __future__ import annotations

import time

from ghostllm.limits.core import (
    BUDGET,
    PARALLEL,
    PARALLEL_RETRY_MS,
    REQUESTS,
    SEED,
    TOKENS,
    WINDOW_MS,
    Level,
    Verdict,
)


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class MemoryBackend:
    def __init__(self, slot_ttl_ms: int) -> None:
        self.slot_ttl_ms = slot_ttl_ms
        # Level key -> [window start, requests, tokens].
        self.windows: dict[str, list[int]] = {}
        # Level key -> {slot: expiry}; the TTL only matters if a settle were ever lost.
        self.slots: dict[str, dict[str, int]] = {}
        # Spend key -> [nano-USD spent, expires (epoch ms)].
        self.spend: dict[str, list[int]] = {}
        self._trim_at = 10_000

    async def admit(self, levels: tuple[Level, ...], estimate: int, slot: str) -> Verdict:
        return self.check(levels, estimate, slot, _now_ms())

    def check(self, levels: tuple[Level, ...], estimate: int, slot: str, now: int) -> Verdict:
        for i, lv in enumerate(levels):
            if lv.has_budget:
                spent = self.spend.get(lv.spend_key)
                if spent is None or spent[1] <= time.time() * 1000:
                    return Verdict(False, i, SEED, lv.budget)
                if spent[0] >= lv.budget:
                    return Verdict(False, i, BUDGET, lv.budget, spent[0])
        counters: list[list[int]] = []
        refused: tuple[int, int, int, int, int] | None = None
        requests = tokens = (0, 0, 0)
        for i, lv in enumerate(levels):
            c = self.windows.get(lv.key)
            if c is None or now >= c[0] + WINDOW_MS:
                c = [now, 0, 0]
            counters.append(c)
            reset = c[0] + WINDOW_MS - now
            if refused is None:
                if lv.rpm and c[1] + 1 > lv.rpm:
                    refused = (i, REQUESTS, lv.rpm, c[1], reset)
                elif lv.tpm and c[2] + estimate > lv.tpm:
                    refused = (i, TOKENS, lv.tpm, c[2], reset)
                elif lv.parallel:
                    busy = self.slots.get(lv.key)
                    if busy:
                        for s in [s for s, until in busy.items() if until <= now]:
                            del busy[s]
                    in_use = len(busy) if busy else 0
                    if in_use + 1 > lv.parallel:
                        refused = (i, PARALLEL, lv.parallel, in_use, PARALLEL_RETRY_MS)
            if lv.rpm and (not requests[0] or lv.rpm - c[1] < requests[1]):
                requests = (lv.rpm, lv.rpm - c[1], reset)
            if lv.tpm and (not tokens[0] or lv.tpm - c[2] < tokens[1]):
                tokens = (lv.tpm, lv.tpm - c[2], reset)
        if refused is not None:
            i, kind, limit, used, reset = refused
            return Verdict(False, i, kind, limit, used, reset, requests, (tokens[0], max(tokens[1], 0), tokens[2]))
        for lv, c in zip(levels, counters, strict=True):
            c[1] += 1
            c[2] += estimate
            self.windows[lv.key] = c
            if lv.parallel:
                self.slots.setdefault(lv.key, {})[slot] = now + self.slot_ttl_ms
        return Verdict(
            True,
            requests=(requests[0], max(requests[1] - 1, 0), requests[2]),
            tokens=(tokens[0], max(tokens[1] - estimate, 0), tokens[2]),
            windows=tuple(c[0] for c in counters),
        )

    def settle(
        self, levels: tuple[Level, ...], windows: tuple[int, ...], slot: str, delta: int, cost_nano: int
    ) -> None:
        for lv, start in zip(levels, windows, strict=True):
            if cost_nano and lv.has_budget:
                spent = self.spend.get(lv.spend_key)
                if spent is not None:
                    spent[0] += cost_nano
            c = self.windows.get(lv.key)
            if delta and c is not None and c[0] == start:
                c[2] = max(c[2] + delta, 0)
            if lv.parallel:
                busy = self.slots.get(lv.key)
                if busy is not None:
                    busy.pop(slot, None)
                    if not busy:
                        del self.slots[lv.key]
        self._trim()

    async def seed(self, level: Level, spent_nano: int) -> None:
        assert level.period is not None
        have = self.spend.get(level.spend_key)
        # Two requests may have read the ledger at once: the first count (and what settled since) stands.
        if have is None or have[1] <= time.time() * 1000:
            self.spend[level.spend_key] = [spent_nano, level.period.expires_ms()]

    def _trim(self) -> None:
        # Bounded memory: windows long over are dropped now and then, not on every call.
        if len(self.windows) > self._trim_at:
            now = _now_ms()
            for k in [k for k, c in self.windows.items() if now >= c[0] + WINDOW_MS]:
                del self.windows[k]
            wall = time.time() * 1000
            for k in [k for k, s in self.spend.items() if s[1] <= wall]:
                del self.spend[k]
            # Amortized: the next sweep waits until as many windows again have been made.
            self._trim_at = max(10_000, 2 * len(self.windows))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
