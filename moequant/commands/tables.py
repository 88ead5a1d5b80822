"""`moequant tables`: the paper's tables (CSV + Markdown) and plots from a results folder."""

from __future__ import annotations

import argparse

NAME = "tables"
HELP = "Aggregate evaluation results and calibration summaries into the paper's tables and plots."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", required=True, help="results folder (MODEL/eval/METHOD-wBITS/*.json, MODEL/calib/)")
    parser.add_argument("--out", required=True, help="folder for the tables (*.csv, *.md) and plots (*.png)")
    parser.add_argument(
        "--spec",
        help="table layout written by the workflow (JSON); without it, one table per model and bit width",
    )


def run(args: argparse.Namespace) -> int:
    # pandas and matplotlib load only when tables are made: every other verb's startup stays lean.
    from moequant.report import build_report, discover_spec, load_spec

    spec = load_spec(args.spec) if args.spec else discover_spec(args.results)
    written = build_report(args.results, args.out, spec)
    print(f"{args.out}: {len(spec.tables)} tables, {len(written)} files")
    return 0
