"""The paper's tables and plots from the evaluation results a workflow run left behind.

`build_report(results_dir, out_dir, spec)` reads `RESULTS/{model}/eval/{method}-w{bits}/*.json`
and `RESULTS/{model}/calib/*.summary.json` and writes CSV + Markdown tables and PNG plots.
"""

from moequant.report.build import build_report
from moequant.report.spec import ReportSpec, TableSpec, discover_spec, load_spec

__all__ = ["ReportSpec", "TableSpec", "build_report", "discover_spec", "load_spec"]
