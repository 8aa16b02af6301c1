"""Interleaved timing of two sides of a comparison.

Each round times both sides, and the side that goes first alternates from
round to round, so drift in machine load (other processes, mongod's own
background work) falls on both sides alike. A round's figure is the mean time
per operation over the round, and a side's figure is the median over rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

AsyncOperation = Callable[[int], Awaitable[Any]]
BlockingOperation = Callable[[int], Any]


@dataclass
class PairResult:
    """The samples of one comparison, in microseconds per unit of work.

    Attributes:
        name: The row's label, e.g. ``"get_key motor c=64"``.
        group: ``"async"``, ``"sync-loop"``, ``"sync-blocking"`` or ``"bulk"``.
        side_a: What side A runs: the execstore call.
        side_b: What side B runs: the baseline.
        unit: What one sample is the time of, e.g. ``"op"``.
        a_samples: Side A's time per unit, one entry per round.
        b_samples: Side B's time per unit, one entry per round.
    """

    name: str
    group: str
    side_a: str
    side_b: str
    unit: str = "op"
    a_samples: list[float] = field(default_factory=list)
    b_samples: list[float] = field(default_factory=list)

    @property
    def a_median(self) -> float:
        """Side A's median time per unit, in microseconds."""
        return statistics.median(self.a_samples)

    @property
    def b_median(self) -> float:
        """Side B's median time per unit, in microseconds."""
        return statistics.median(self.b_samples)

    @property
    def ratio(self) -> float:
        """median(A) / median(B): above 1 means execstore is slower."""
        return self.a_median / self.b_median

    @property
    def paired_ratio(self) -> float:
        """The median over rounds of A / B within the round.

        Both sides of a round run back to back, so this figure is less
        affected by load that changes from round to round than ``ratio``.
        """
        pairs = zip(self.a_samples, self.b_samples, strict=True)
        return statistics.median(a / b for a, b in pairs)

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict, medians and samples included."""
        return {
            "name": self.name,
            "group": self.group,
            "side_a": self.side_a,
            "side_b": self.side_b,
            "unit": self.unit,
            "a_median_us": self.a_median,
            "b_median_us": self.b_median,
            "ratio": self.ratio,
            "paired_ratio": self.paired_ratio,
            "a_samples_us": self.a_samples,
            "b_samples_us": self.b_samples,
        }


async def time_async(operation: AsyncOperation, ops: int, concurrency: int) -> float:
    """Run ``ops`` operations in each of ``concurrency`` tasks and return µs per op.

    Operation ``i`` of task ``t`` gets the index ``t * ops + i``.
    """

    async def worker(task_index: int) -> None:
        for i in range(ops):
            await operation(task_index * ops + i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(concurrency)))
    elapsed = time.perf_counter() - start
    return elapsed * 1e6 / (ops * concurrency)


def time_blocking(operation: BlockingOperation, ops: int) -> float:
    """Run ``ops`` operations one after another and return µs per op."""
    start = time.perf_counter()
    for i in range(ops):
        operation(i)
    elapsed = time.perf_counter() - start
    return elapsed * 1e6 / ops


async def compare_async(
    result: PairResult,
    side_a: AsyncOperation,
    side_b: AsyncOperation,
    *,
    ops: int,
    rounds: int,
    concurrency: int = 1,
) -> PairResult:
    """Fill ``result`` with interleaved rounds of two asyncio sides.

    One unmeasured round of each side first warms the connection pools.
    """
    for side in (side_a, side_b):
        await time_async(side, ops, concurrency)

    for round_index in range(rounds):
        for name in _order(round_index):
            side = side_a if name == "a" else side_b
            micros = await time_async(side, ops, concurrency)
            _samples(result, name).append(micros)
    return result


def compare_blocking(
    result: PairResult,
    side_a: BlockingOperation,
    side_b: BlockingOperation,
    *,
    ops: int,
    rounds: int,
) -> PairResult:
    """Fill ``result`` with interleaved rounds of two blocking sides."""
    for side in (side_a, side_b):
        time_blocking(side, ops)

    for round_index in range(rounds):
        for name in _order(round_index):
            side = side_a if name == "a" else side_b
            _samples(result, name).append(time_blocking(side, ops))
    return result


def _order(round_index: int) -> tuple[str, str]:
    return ("a", "b") if round_index % 2 == 0 else ("b", "a")


def _samples(result: PairResult, name: str) -> list[float]:
    return result.a_samples if name == "a" else result.b_samples
