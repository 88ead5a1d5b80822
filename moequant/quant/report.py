"""What a quantization run produced: the codes of every weight and one report row per member.

The per-expert report is where starved experts and damping escalations become visible;
a CSV keeps it readable with any tool and diffable between runs.
"""

from __future__ import annotations

import csv
import math
from dataclasses import astuple, dataclass, field, fields
from pathlib import Path

import torch

from moequant.artifacts import atomic_file
from moequant.quant.grid import QuantizedWeight, pack, unpack


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
class PackedWeight:
    """A quantized weight as it is kept until the checkpoint is written: codes bit-packed.

    One uint8 per code would hold half an fp16 model's size on the host for the whole run
    (at W4); packing as each layer finishes keeps it at bits/16 of it. The packing is the
    checkpoint's (`grid.pack`, compressed-tensors' `weight_packed` rows).
    """

    codes: torch.Tensor
    shape: tuple[int, ...]
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    sym: bool

    @classmethod
    def of(cls, weight: QuantizedWeight) -> PackedWeight:
        return cls(
            pack(weight.codes, weight.bits), tuple(weight.codes.shape), weight.scale.cpu(), weight.zero.cpu(),
            weight.bits, weight.sym,
        )

    def unpacked(self) -> QuantizedWeight:
        return QuantizedWeight(unpack(self.codes, self.bits, self.shape), self.scale, self.zero, self.bits, self.sym)


@dataclass
class QuantResult:
    weights: dict[str, PackedWeight] = field(default_factory=dict)
    rows: list[ReportRow] = field(default_factory=list)

    def add(self, address: str, weight: QuantizedWeight, rows: list[ReportRow]) -> None:
        self.weights[address] = PackedWeight.of(weight)
        self.rows.extend(rows)

    def layer_weights(self, index: int) -> dict[str, PackedWeight]:
        """The codes of decoder layer `index` (addresses are `layers.<index>.<module>`, see `Target.address`)."""
        return {a: w for a, w in self.weights.items() if a.startswith(f"layers.{index}.")}

    def summary(self) -> dict[str, object]:
        fallbacks: dict[str, int] = {}
        for row in self.rows:
            if row.fallback:
                fallbacks[row.fallback] = fallbacks.get(row.fallback, 0) + 1
        losses = [row.loss for row in self.rows if not math.isnan(row.loss)]
        return {
            "weights": len({(row.layer, row.module) for row in self.rows}),
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
