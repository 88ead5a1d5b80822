"""Progress of long stages as plain lines on stderr, flushed as they are written.

Progress bars draw only on a terminal: under Snakemake or SLURM, where stderr is a log file,
a bar leaves the log empty until the job ends and a running job looks like a hung one. A
line per unit of work (a decoder layer, a dataset, a task) or per time interval (EBSS
tokens) reads the same on a terminal and in a log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def say(stage: str, message: str) -> None:
    sys.stderr.write(f"[{stage}] {message}\n")
    sys.stderr.flush()


def each(
    items: Iterable[T],
    stage: str,
    noun: str,
    name: Callable[[T], str] | None = None,
    detail: Callable[[], str] | None = None,
    enabled: bool = True,
) -> Iterator[T]:
    """Yield `items`; after the caller's work on each one, a line `noun i/N name: seconds (detail)`.

    `detail` is asked after the work, so it can report what the work just produced
    (fallbacks so far, the perplexity measured).
    """
    items = list(items)
    started = time.perf_counter()
    for index, item in enumerate(items, start=1):
        begun = time.perf_counter()
        yield item
        if enabled:
            extra = f"; {detail()}" if detail is not None else ""
            now = time.perf_counter()
            label = f" {name(item)}" if name is not None else ""
            say(stage, f"{noun} {index}/{len(items)}{label}: {now - begun:.1f} s (elapsed {now - started:.0f} s{extra})")


class Ticker:
    """Counts units of work and writes a line at most every `interval` seconds, plus a last one."""

    def __init__(self, stage: str, total: int, unit: str, interval: float = 10.0, enabled: bool = True) -> None:
        self.stage, self.total, self.unit = stage, total, unit
        self.interval, self.enabled = interval, enabled
        self.done = 0
        self.started = self.last = time.perf_counter()

    def update(self, count: int, detail: Callable[[], str] | None = None) -> None:
        self.done += count
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.interval or self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            extra = f", {detail()}" if detail is not None else ""
            say(
                self.stage,
                f"{self.done}/{self.total} {self.unit} ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:.1f} {self.unit}/s{extra}",
            )
