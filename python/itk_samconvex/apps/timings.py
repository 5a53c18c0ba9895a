"""Seconds per labelled step of a whole command (stdlib only: the CLI starts the clock
before it imports anything heavy)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Timings:
    """Seconds per labelled step of a whole command (imports, reading, ..., writing)."""

    start: float = field(default_factory=time.perf_counter)
    steps: dict[str, float] = field(default_factory=dict)
    _tick: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._tick = time.perf_counter()

    def mark(self, step: str) -> float:
        """Attribute the time since the last mark to ``step`` (adds up); return it."""
        now = time.perf_counter()
        spent = now - self._tick
        self.steps[step] = self.steps.get(step, 0.0) + spent
        self._tick = now
        return spent

    def to_dict(self) -> dict[str, float]:
        return {
            **{k: round(v, 3) for k, v in self.steps.items()},
            "total": round(time.perf_counter() - self.start, 3),
        }


__all__ = ["Timings"]
