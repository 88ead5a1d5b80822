"""What a quantization run produced: the codes of every weight and one report row per member.

The per-expert report is where starved experts and damping escalations become visible;
a CSV keeps it readable with any tool and diffable between runs.
"""

from __future__ import annotations

import csv
import math
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path

from moequant.artifacts import atomic_file
from moequant.quant.grid import QuantizedWeight


@dataclass
class ReportRow:
    layer: int
    module: str
    expert: int | None
    tokens: int
    mass: float
    loss: float
    damp: float
    fallback: str


@dataclass
class QuantResult:
    weights: dict[str, QuantizedWeight] = field(default_factory=dict)
    rows: list[ReportRow] = field(default_factory=list)

    def add(self, address: str, weight: QuantizedWeight, rows: list[ReportRow]) -> None:
        self.weights[address] = QuantizedWeight(
            weight.codes.cpu(), weight.scale.cpu(), weight.zero.cpu(), weight.bits, weight.sym
        )
        self.rows.extend(rows)

    def summary(self) -> dict[str, object]:
        fallbacks: dict[str, int] = {}
        for row in self.rows:
            if row.fallback:
                fallbacks[row.fallback] = fallbacks.get(row.fallback, 0) + 1
        losses = [row.loss for row in self.rows if not math.isnan(row.loss)]
        return {
            "weights": len(self.weights),
            "report_rows": len(self.rows),
            "fallbacks": fallbacks,
            "total_gptq_loss": sum(losses),
        }


def write_report(path: str | Path, rows: list[ReportRow]) -> None:
    with atomic_file(path) as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(ReportRow)])
        for row in rows:
            writer.writerow(["" if v is None else v for v in astuple(row)])


def read_report(path: str | Path) -> list[ReportRow]:
    with open(path, newline="") as handle:
        return [
            ReportRow(
                layer=int(r["layer"]),
                module=r["module"],
                expert=int(r["expert"]) if r["expert"] else None,
                tokens=int(r["tokens"]),
                mass=float(r["mass"]),
                loss=float(r["loss"]),
                damp=float(r["damp"]),
                fallback=r["fallback"],
            )
            for r in csv.DictReader(handle)
        ]
