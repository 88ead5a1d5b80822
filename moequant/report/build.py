"""Write every table and plot of a results folder, each file atomically."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from moequant.artifacts import atomic_file
from moequant.plan.layout import PLOT_KINDS, SUMMARY_FILES, TABLE_FORMATS, plot_file, table_file
from moequant.report.findings import baseline_calibration, findings_markdown
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
            for task, value in layout.task_errors(model, method, bits).items():
                rows.append({**base, "metric": "accuracy_stderr", "dataset": task, "value": value})
        for calib in layout.calibration_sets(model):
            sigma = layout.calibration(model, calib).get("sigma")
            if isinstance(sigma, (int, float)) and math.isfinite(sigma):
                row = {"model": model, "method": "", "label": "", "bits": None}
                rows.append({**row, "metric": "sigma", "dataset": calib, "value": float(sigma)})
    columns = ["model", "method", "label", "bits", "metric", "dataset", "value"]
    return pd.DataFrame(rows, columns=columns)


def seed_means(results: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """`results` with each seeded method's and set's runs replaced by their mean: what the findings weigh."""
    runs = {run: method for method, members in spec.seed_methods.items() for run in members}
    copies = {copy: calib for calib, members in spec.seed_calibrations.items() for copy in members}
    if not runs and not copies:
        return results
    frame = results.copy()
    seeded = frame["method"].isin(list(runs))
    frame.loc[seeded, "method"] = frame.loc[seeded, "method"].map(runs)
    copied = (frame["metric"] == "sigma") & frame["dataset"].isin(list(copies))
    frame.loc[copied, "dataset"] = frame.loc[copied, "dataset"].map(copies)
    frame["label"] = [spec.methods[m].label if m in spec.methods else m for m in frame["method"]]
    keys = ["model", "method", "label", "bits", "metric", "dataset"]
    return frame.groupby(keys, dropna=False, sort=False, as_index=False)["value"].mean()


def _measured(spec: ReportSpec, layout: ResultsLayout) -> dict[str, dict[str, Any]]:
    """Per model, what the testbed tells beside the verdicts: residual-stream outliers, expert count, per-document task scores."""
    baseline = baseline_calibration(spec)
    measured: dict[str, dict[str, Any]] = {}
    for model in spec.models:
        summaries = [layout.calibration(model, name) for name in layout.calibration_sets(model)]
        usage = next((s["per_layer_usage"] for s in summaries if s.get("per_layer_usage")), None)
        measured[model] = {
            "residual_stream": layout.calibration(model, baseline).get("residual_stream") if baseline else None,
            "experts": len(usage[0]) if usage else None,
            "task_documents": {variant: layout.task_documents(model, *variant) for variant in layout.variants(model)},
        }
    return measured


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def build_report(results: str | Path, out: str | Path, spec: ReportSpec) -> list[Path]:
    """Tables as `{name}.csv` + `{name}.md`, all of them in `tables.md`, `results.csv`, `findings.md`, plots.

    The names are the workflow's (`moequant/plan/layout.py`): its tables rule expects exactly these files."""
    layout = ResultsLayout(results)
    out = Path(out)
    written = []
    sections = []
    for table in spec.tables:
        frame = build_table(spec, table, layout)
        markdown = to_markdown(frame, table.title)
        csv, md = (out / table_file(table.name, ext) for ext in TABLE_FORMATS)
        _write_text(csv, frame.to_csv(index=False, float_format="%.6g"))
        _write_text(md, markdown)
        written += [csv, md]
        sections.append(markdown)
    all_tables, results_csv, findings = (out / name for name in SUMMARY_FILES)
    _write_text(all_tables, "\n".join(sections))
    results_frame = long_results(spec, layout)
    _write_text(results_csv, results_frame.to_csv(index=False, float_format="%.6g"))
    _write_text(findings, findings_markdown(spec, seed_means(results_frame, spec), _measured(spec, layout)))
    written += [all_tables, results_csv, findings]
    for model in spec.models:
        bits_plot, usage_plot = (out / plot_file(kind, model) for kind in PLOT_KINDS)
        _write_bytes(bits_plot, ppl_vs_bits(spec, layout, model, spec.ppl_dataset))
        _write_bytes(usage_plot, expert_usage(spec, layout, model))
        written += [bits_plot, usage_plot]
    return written
