"""A rebuild's progress as a terminal line: done out of expected, rate, ETA, and a bar."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Progress:
    """How far a rebuild is: rows (snapshot modes) or offsets (replay) done out of those
    expected, and the rate. `finished` is set on the rebuild's last report."""

    done: int
    expected: int
    started: float
    unit: str = "records"
    finished: bool = False

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    @property
    def eta_s(self) -> float | None:
        if not self.expected or not self.done or self.rate <= 0:
            return None
        return max(0.0, self.expected - self.done) / self.rate

    def line(self, width: int = 30) -> str:
        if not self.expected:
            return f"{self.done:,} {self.unit} applied (total unknown), {self.rate:,.0f}/s"
        if self.done > self.expected or (self.finished and self.done != self.expected):
            # the expected figure was an estimate (the planner's, for a snapshot mode)
            return (f"[{'#' * width}] {self.done:,} {self.unit} (estimate was {self.expected:,}), "
                    f"{self.rate:,.0f}/s")
        frac = self.done / self.expected
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        eta = f", ETA {self.eta_s:.0f} s" if self.eta_s is not None and not self.finished else ""
        return (f"[{bar}] {self.done:,}/{self.expected:,} {self.unit} ({frac:.0%}), "
                f"{self.rate:,.0f}/s{eta}")
