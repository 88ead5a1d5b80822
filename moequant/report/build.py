"""Write every table and plot of a results folder, each file atomically."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from moequant.artifacts import atomic_file
from moequant.report.findings import findings_markdown
from moequant.report.layout import ResultsLayout
from moequant.report.plots import expert_usage, ppl_vs_bits
from moequant.report.spec import ReportSpec
from moequant.report.tables import build_table, to_markdown


def long_results(spec: ReportSpec, layout: ResultsLayout) -> pd.DataFrame:
    """Every number the tables could show, one row each, for analysis outside the tables."""
    rows = []
    for model in spec.models:
        for method, bits in layout.variants(model):
            label = spec.methods[method].label if method in spec.methods else method
            base = {"model": model, "method": method, "label": label, "bits": bits}
            for dataset in layout.ppl_datasets(model, method, bits):
                for metric, value in layout.ppl(model, method, bits, dataset).items():
                    rows.append({**base, "metric": metric, "dataset": dataset, "value": value})
            for task, value in layout.tasks(model, method, bits).items():
                rows.append({**base, "metric": "accuracy", "dataset": task, "value": value})
        for calib in layout.calibration_sets(model):
            sigma = layout.calibration(model, calib).get("sigma")
            if isinstance(sigma, (int, float)) and math.isfinite(sigma):
                row = {"model": model, "method": "", "label": "", "bits": None}
                rows.append({**row, "metric": "sigma", "dataset": calib, "value": float(sigma)})
    columns = ["model", "method", "label", "bits", "metric", "dataset", "value"]
    return pd.DataFrame(rows, columns=columns)


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def build_report(results: str | Path, out: str | Path, spec: ReportSpec) -> list[Path]:
    """Tables as `{name}.csv` + `{name}.md`, all of them in `tables.md`, `results.csv`, `findings.md`, plots."""
    layout = ResultsLayout(results)
    out = Path(out)
    written = []
    sections = []
    for table in spec.tables:
        frame = build_table(spec, table, layout)
        markdown = to_markdown(frame, table.title)
        _write_text(out / f"{table.name}.csv", frame.to_csv(index=False, float_format="%.6g"))
        _write_text(out / f"{table.name}.md", markdown)
        written += [out / f"{table.name}.csv", out / f"{table.name}.md"]
        sections.append(markdown)
    _write_text(out / "tables.md", "\n".join(sections))
    results_frame = long_results(spec, layout)
    _write_text(out / "results.csv", results_frame.to_csv(index=False, float_format="%.6g"))
    _write_text(out / "findings.md", findings_markdown(spec, results_frame))
    written += [out / "tables.md", out / "results.csv", out / "findings.md"]
    for model in spec.models:
        _write_bytes(out / f"ppl_vs_bits-{model}.png", ppl_vs_bits(spec, layout, model, spec.ppl_dataset))
        _write_bytes(out / f"expert_usage-{model}.png", expert_usage(spec, layout, model))
        written += [out / f"ppl_vs_bits-{model}.png", out / f"expert_usage-{model}.png"]
    return written
