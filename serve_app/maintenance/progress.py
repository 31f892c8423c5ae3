"""Job progress: rows done / total, rate and ETA, measured over the current run only (a resumed
job's earlier work does not inflate its rate)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Progress:
    total: int
    done: int = 0
    clock: Callable[[], float] = time.monotonic
    _start: float = field(init=False)
    _done_at_start: int = field(init=False)

    def __post_init__(self) -> None:
        self._start = self.clock()
        self._done_at_start = self.done

    def add(self, n: int) -> None:
        self.done += n

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self._start

    @property
    def rate_per_s(self) -> float | None:
        moved, t = self.done - self._done_at_start, self.elapsed_s
        return moved / t if moved > 0 and t > 0 else None

    @property
    def eta_s(self) -> float | None:
        if self.done >= self.total:
            return 0.0
        rate = self.rate_per_s
        return (self.total - self.done) / rate if rate else None

    def line(self, stage: str) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate, eta = self.rate_per_s, self.eta_s
        return (
            f"[{stage}] {self.done}/{self.total} ({pct:.1f}%)"
            f" rate={'-' if rate is None else f'{rate:.1f}/s'}"
            f" eta={'-' if eta is None else f'{eta:.0f}s'}"
        )
