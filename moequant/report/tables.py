"""One table of the paper's layout: Model, Method, [Calib, σ], perplexities, KL, tasks, AVG.

A method run under several calibration seeds is one row: means, with the spread over
seeds as their ±.

Numbers stay raw in the DataFrame (CSV keeps full precision); rounding happens only in the
Markdown rendering. A missing result is NaN in the CSV and "–" in Markdown, never a zero.
"""

from __future__ import annotations

import math
import statistics

import pandas as pd

from moequant.report.layout import ResultsLayout
from moequant.report.spec import ReportSpec, TableSpec

MISSING = "–"
DISTINCT = "distinct-4"
"""Distinct 4-grams over all 4-grams of the calibration set (1 = no repetition)."""
REPEAT = "rep. span"
"""Mean, over samples, of the longest token span a sample repeats."""


def ppl_column(dataset: str) -> str:
    return dataset


def kl_column(dataset: str) -> str:
    return f"KL {dataset}"


ERROR_SUFFIX = " ±"


def error_column(column: str) -> str:
    """The CSV column of `column`'s standard error; Markdown prints it in the same cell, as ±."""
    return f"{column}{ERROR_SUFFIX}"


def _row(spec: ReportSpec, table: TableSpec, layout: ResultsLayout, model: str, method: str) -> dict[str, object]:
    bits = spec.bits_for(method, table)
    row: dict[str, object] = {"Model": spec.models[model], "Method": spec.method_label(method)}
    if table.sigma:
        calib = spec.methods[method].calibration
        row["Calib"] = spec.calibration.get(calib, calib) if calib else MISSING
        summary = layout.calibration(model, calib) if calib else {}
        repetition = summary.get("repetition", {})
        row["σ"] = summary.get("sigma", math.nan)
        row[DISTINCT] = repetition.get("distinct_ratio_set", math.nan)
        row[REPEAT] = repetition.get("longest_repeat_mean", math.nan)
    for dataset in table.ppl:
        row[ppl_column(dataset)] = layout.ppl(model, method, bits, dataset).get("ppl", math.nan)
    for dataset in table.kl:
        row[kl_column(dataset)] = layout.ppl(model, method, bits, dataset).get("kld", math.nan)
    if table.tasks:
        accuracies = layout.tasks(model, method, bits)
        errors = layout.task_errors(model, method, bits)
        values = [accuracies.get(task, math.nan) for task in table.tasks]
        spreads = [errors.get(task, math.nan) for task in table.tasks]
        for task, value, spread in zip(table.tasks, values, spreads):
            row[task], row[error_column(task)] = value, spread
        row["AVG"] = sum(values) / len(values) if not any(math.isnan(v) for v in values) else math.nan
        # tasks are scored on disjoint documents, so their errors add in quadrature
        row[error_column("AVG")] = math.sqrt(sum(e * e for e in spreads)) / len(spreads)
    return row


def _over_seeds(spec: ReportSpec, method: str, runs: list[dict[str, object]]) -> dict[str, object]:
    """One row for a seeded method: each number the mean over its runs, its ± the spread
    (sample standard deviation) over them, in place of any per-run error."""
    row: dict[str, object] = {"Model": runs[0]["Model"], "Method": f"{spec.method_label(method)}, {len(runs)} seeds"}
    calib = spec.methods[method].calibration
    for column in runs[0]:
        if column in row or str(column).endswith(ERROR_SUFFIX):
            continue
        if column == "Calib":
            row[column] = spec.calibration.get(calib, calib) if calib else MISSING
            continue
        values = [float(run[column]) for run in runs]  # type: ignore[arg-type]
        if any(math.isnan(v) for v in values):
            row[column] = row[error_column(column)] = math.nan
            continue
        row[column] = statistics.fmean(values)
        row[error_column(column)] = statistics.stdev(values)
    return row


def build_table(spec: ReportSpec, table: TableSpec, layout: ResultsLayout) -> pd.DataFrame:
    rows = []
    for model in spec.table_models(table):
        for method in table.methods:
            runs = spec.seed_methods.get(method)
            if runs:
                rows.append(_over_seeds(spec, method, [_row(spec, table, layout, model, run) for run in runs]))
            else:
                rows.append(_row(spec, table, layout, model, method))
    return pd.DataFrame(rows)


def _format(column: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if column == "σ":
        return f"{value:.4f}"
    if column == DISTINCT:
        return f"{value:.3f}"
    if column == REPEAT:
        return f"{value:.1f}"
    if column.startswith("KL "):
        return f"{value:.4f}"
    return f"{value:.2f}"


def _cell(column: str, record: dict[str, object]) -> str:
    text = _format(column, record[column])
    error = record.get(error_column(column))
    if text != MISSING and isinstance(error, float) and not math.isnan(error):
        text += f" ± {_format(column, error)}"
    return text


def to_markdown(frame: pd.DataFrame, title: str) -> str:
    """A pipe table; the model name is printed once per block of rows, as in the paper."""
    columns = [c for c in frame.columns if not str(c).endswith(ERROR_SUFFIX)]
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "|".join("---" if c in ("Model", "Method", "Calib") else "---:" for c in columns) + "|")
    previous_model = None
    for record in frame.to_dict("records"):
        cells = [_cell(column, record) for column in columns]
        if record.get("Model") == previous_model:
            cells[columns.index("Model")] = ""
        previous_model = record.get("Model")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
