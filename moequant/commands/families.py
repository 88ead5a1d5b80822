"""`moequant families`: which MoE families of the installed transformers each stage handles."""

from __future__ import annotations

import argparse
from pathlib import Path

from moequant.artifacts import atomic_file
from moequant.errors import UsageError
from moequant.progress import each

NAME = "families"
HELP = "Build a tiny instance of every MoE model type transformers ships and run every stage on it; print the table."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-type", action="append", default=None, help="only these model types (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here (docs/families.md)")


def run(args: argparse.Namespace) -> int:
    from moequant.coverage import check_family, markdown_table, moe_model_types

    known = moe_model_types()
    unknown = [t for t in args.model_type or () if t not in known]
    if unknown:
        raise UsageError(f"model type {unknown[0]!r} is not a MoE model type of the installed transformers; choose from {', '.join(known)}")
    model_types = args.model_type or known
    reports = [check_family(t) for t in each(model_types, "families", "model type", name=str)]
    table = markdown_table(reports)
    print(table, end="")
    if args.out is not None:
        with atomic_file(args.out) as handle:
            handle.write(HEADER + table)
    return 0


HEADER = """# Supported MoE families

Measured, not declared: `moequant families --out docs/families.md` builds a tiny random
instance of every MoE model type of the installed transformers from its own config class and
runs every stage on it (see `moequant/coverage.py` for what each column checks). `refused`
is moequant's own one-line refusal with its reason; `failed` is a family moequant mishandles
today. Regenerate after upgrading transformers.

"""
