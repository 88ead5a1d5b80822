"""What the tables show: models, methods, calibration sets and each table's columns.

The workflow writes this from its config (`tables.spec.json`); without one, a spec is
discovered from the results folder so `moequant tables` also works on hand-made runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moequant.errors import UsageError
from moequant.plan.layout import FP_BITS
from moequant.report.layout import ResultsLayout


@dataclass
class MethodInfo:
    label: str
    calibration: str | None = None
    bits: list[int] = field(default_factory=list)
    rotation: bool = False
    algorithm: str | None = None
    """What the method is, so the findings can tell its role (a discovered spec knows neither)."""
    all_experts: bool = False

    @property
    def is_fp(self) -> bool:
        return self.bits == [FP_BITS]


@dataclass
class TableSpec:
    name: str
    title: str
    methods: list[str]
    bits: int | None = None
    models: list[str] = field(default_factory=list)
    ppl: list[str] = field(default_factory=list)
    kl: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    sigma: bool = False

    def __post_init__(self) -> None:
        if not self.methods:
            raise UsageError(f"table {self.name!r} lists no methods")
        if self.bits is not None and self.bits < 1:
            raise UsageError(f"table {self.name!r}: bits must be positive, got {self.bits}")


@dataclass
class ReportSpec:
    models: dict[str, str]
    methods: dict[str, MethodInfo]
    calibration: dict[str, str]
    tables: list[TableSpec]
    ppl_dataset: str | None = None
    calibration_sources: dict[str, str] = field(default_factory=dict)
    repetition_blocked: frozenset[str] = frozenset()
    """EBSS sets searched with a repetition block: a variant of the paper's EBSS, not the method itself."""
    seed_methods: dict[str, list[str]] = field(default_factory=dict)
    """A method as the config wrote it → its runs, one per calibration seed (`plan/seeds.py`)."""
    seed_calibrations: dict[str, list[str]] = field(default_factory=dict)
    """A calibration set as the config wrote it → its copies, one per seed."""

    def __post_init__(self) -> None:
        for table in self.tables:
            for model in table.models:
                if model not in self.models:
                    raise UsageError(f"table {table.name!r} names unknown model {model!r}; known: {', '.join(self.models)}")
            for method in table.methods:
                if method not in self.methods:
                    raise UsageError(
                        f"table {table.name!r} names unknown method {method!r}; known: {', '.join(self.methods)}"
                    )
        for name, method in self.methods.items():
            if method.calibration is not None and method.calibration not in self.calibration:
                self.calibration[method.calibration] = method.calibration

    def table_models(self, table: TableSpec) -> list[str]:
        return table.models or list(self.models)

    def method_label(self, method: str) -> str:
        return self.methods[method].label

    def bits_for(self, method: str, table: TableSpec) -> int:
        """The FP row is evaluated once (w16) and shown in every table regardless of its bits."""
        if self.methods[method].is_fp or table.bits is None:
            return FP_BITS if self.methods[method].is_fp else max(self.methods[method].bits)
        return table.bits


def _as_label_map(raw: dict[str, Any]) -> dict[str, str]:
    return {name: (entry or {}).get("label", name) for name, entry in raw.items()}


def spec_from_dict(raw: dict[str, Any]) -> ReportSpec:
    try:
        methods = {
            name: MethodInfo(
                label=entry.get("label", name),
                calibration=entry.get("calibration"),
                bits=[int(b) for b in entry.get("bits", [])],
                rotation=bool(entry.get("rotation", False)),
                algorithm=entry.get("algorithm"),
                all_experts=bool(entry.get("all_experts", False)),
            )
            for name, entry in raw["methods"].items()
        }
        raw_tables = raw["tables"]
        if isinstance(raw_tables, dict):
            raw_tables = [{"name": name, **entry} for name, entry in raw_tables.items()]
        tables = [
            TableSpec(
                name=entry["name"],
                title=entry.get("title", entry["name"]),
                methods=list(entry["methods"]),
                bits=entry.get("bits"),
                models=list(entry.get("models", [])),
                ppl=list(entry.get("ppl", [])),
                kl=list(entry.get("kl", [])),
                tasks=list(entry.get("tasks", [])),
                sigma=bool(entry.get("sigma", False)),
            )
            for entry in raw_tables
        ]
        return ReportSpec(
            models=_as_label_map(raw["models"]),
            methods=methods,
            calibration=_as_label_map(raw.get("calibration", {})),
            tables=tables,
            ppl_dataset=(raw.get("plots") or {}).get("ppl_dataset"),
            calibration_sources={
                name: str((entry or {}).get("source", "")) for name, entry in raw.get("calibration", {}).items()
            },
            repetition_blocked=frozenset(
                name for name, entry in raw.get("calibration", {}).items() if (entry or {}).get("no_repeat_ngram")
            ),
            seed_methods=dict((raw.get("seed_groups") or {}).get("methods", {})),
            seed_calibrations=dict((raw.get("seed_groups") or {}).get("calibration", {})),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"table spec is malformed: missing or wrong entry {err}") from None


def load_spec(path: str | Path) -> ReportSpec:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"table spec {str(path)!r} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"table spec {str(path)!r} is not JSON: {err}") from None
    return spec_from_dict(raw)


def discover_spec(results: str | Path) -> ReportSpec:
    """One table per model × bit width with every method, dataset and task found on disk."""
    layout = ResultsLayout(results)
    models = layout.models()
    if not models:
        raise UsageError(f"no evaluation results under {str(results)!r} (expected MODEL/eval/METHOD-wBITS/*.json)")
    variants = {model: layout.variants(model) for model in models}
    bits_of: dict[str, set[int]] = {}
    datasets: set[str] = set()
    tasks: set[str] = set()
    for model, found in variants.items():
        for method, bits in found:
            bits_of.setdefault(method, set()).add(bits)
            datasets.update(layout.ppl_datasets(model, method, bits))
            tasks.update(layout.task_names(model, method, bits))
    methods = {name: MethodInfo(label=name, bits=sorted(bits)) for name, bits in sorted(bits_of.items())}
    fp = [name for name, info in methods.items() if info.is_fp]
    quant_bits = sorted({b for info in methods.values() for b in info.bits if b != FP_BITS}, reverse=True)
    tables = [
        TableSpec(
            name=f"{model}_w{bits}",
            title=f"{model}, W{bits}",
            models=[model],
            bits=bits,
            methods=fp + [m for m in methods if bits in methods[m].bits],
            ppl=sorted(datasets),
            kl=sorted(datasets),
            tasks=sorted(tasks),
        )
        for model in models
        for bits in quant_bits
    ]
    if not tables:
        tables = [TableSpec(name=f"{m}_fp", title=f"{m}, full precision", models=[m], methods=fp) for m in models]
    calibration = {name: name for model in models for name in layout.calibration_sets(model)}
    return ReportSpec(models={m: m for m in models}, methods=methods, calibration=calibration, tables=tables)
