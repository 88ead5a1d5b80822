"""Where every artifact of a workflow run lies below its results folder.

Stated once for both sides: the workflow writes these paths and `moequant tables`
(`moequant/report/layout.py`) reads them back, so the two cannot drift apart. Paths are
strings joined with "/", not `pathlib.Path`: the workflow passes them through Snakemake
with `{wildcards}` inside and compares them as text, and a normalising Path would turn a
configured `./results` into `results`.
"""

from __future__ import annotations

import re

FP_BITS = 16
"""The bit width in the variant name of the unquantized model (`fp16-w16`)."""

DEMO_DATA = "{data}"
"""The placeholder for the demo model's data folder inside a configured `text:PATH` source."""

EVAL = "eval"
PPL_PREFIX = "ppl-"
JSON = ".json"
TASKS_FILE = "tasks.json"
CALIB_SUMMARY = ".summary.json"
TABLE_FORMATS = ("csv", "md")
PLOT_KINDS = ("ppl_vs_bits", "expert_usage")
SUMMARY_FILES = ("tables.md", "results.csv", "findings.md")
"""What `moequant tables` writes beside the per-table files: every table, every number, the findings."""

_VARIANT = re.compile(r"^(?P<method>.+)-w(?P<bits>\d+)$")


def variant(method: str, bits: int | str) -> str:
    return f"{method}-w{bits}"


def parse_variant(name: str) -> tuple[str, int] | None:
    """(method, bits) of a variant folder's name; None for a name no variant has."""
    match = _VARIANT.match(name)
    return (match["method"], int(match["bits"])) if match else None


def ppl_name(dataset: str) -> str:
    return f"{PPL_PREFIX}{dataset}{JSON}"


def ppl_dataset(name: str) -> str:
    """The dataset of a perplexity file's name (the inverse of `ppl_name`)."""
    return name[len(PPL_PREFIX) : -len(JSON)]


def table_file(table: str, ext: str) -> str:
    return f"{table}.{ext}"


def plot_file(kind: str, model: str) -> str:
    return f"{kind}-{model}.png"


def uses_demo_data(source: object) -> bool:
    """Whether a configured source reads the demo's data folder (so exists only for demo models)."""
    return DEMO_DATA in str(source)


class Layout:
    """The paths of one results folder; any argument may be a `{wildcard}`."""

    def __init__(self, results: str) -> None:
        self.results = results.rstrip("/")

    def _path(self, *parts: str | int) -> str:
        return "/".join([self.results, *map(str, parts)])

    def model_dir(self, model: str) -> str:
        """The built demo model (with its tokenizer and data folder)."""
        return self._path(model, "model")

    def data_dir(self, model: str) -> str:
        return f"{self.model_dir(model)}/data"

    def resolve_source(self, source: str, model: str) -> str:
        """A configured source with `{data}` expanded to this model's demo data folder."""
        return source.replace(DEMO_DATA, self.data_dir(model))

    def rotated_dir(self, model: str) -> str:
        return self._path(model, "rotated")

    def calib_file(self, model: str, calib: str) -> str:
        return self._path(model, "calib", f"{calib}.jsonl")

    def calib_summary(self, model: str, calib: str) -> str:
        """σ and expert usage of one calibration set."""
        return self._path(model, "calib", f"{calib}{CALIB_SUMMARY}")

    def quant_dir(self, model: str, method: str, bits: int | str) -> str:
        return self._path(model, "quant", variant(method, bits))

    def tasks_dir(self, model: str) -> str:
        """The demo model's local lm-eval tasks."""
        return self._path(model, "tasks")

    def evaluation_key(self, model: str, method: str, bits: int | str) -> str:
        """A variant's evaluation folder relative to the results folder: the workflow's
        `evaluated` wildcard, so one wildcard names model, method and bits at once."""
        return f"{model}/{EVAL}/{variant(method, bits)}"

    def evaluations_dir(self, model: str) -> str:
        """The folder holding every evaluated variant of a model."""
        return self._path(model, EVAL)

    def evaluated_dir(self, key: str) -> str:
        return self._path(key)

    def evaluated_ppl_file(self, key: str, dataset: str) -> str:
        return f"{self.evaluated_dir(key)}/{ppl_name(dataset)}"

    def evaluated_tasks_file(self, key: str) -> str:
        return f"{self.evaluated_dir(key)}/{TASKS_FILE}"

    def eval_dir(self, model: str, method: str, bits: int | str) -> str:
        return self.evaluated_dir(self.evaluation_key(model, method, bits))

    def ppl_file(self, model: str, method: str, bits: int | str, dataset: str) -> str:
        """Perplexity, KL divergence and top-1 agreement to the fp model on one dataset."""
        return self.evaluated_ppl_file(self.evaluation_key(model, method, bits), dataset)

    def tasks_file(self, model: str, method: str, bits: int | str) -> str:
        """The lm-eval task accuracies."""
        return self.evaluated_tasks_file(self.evaluation_key(model, method, bits))

    def log(self, *parts: str) -> str:
        return f"{self._path('logs', *parts)}.log"

    def benchmark(self, *parts: str) -> str:
        return f"{self._path('benchmarks', *parts)}.tsv"

    def tables_dir(self) -> str:
        return self._path("tables")

    def spec_file(self) -> str:
        """The table layout the workflow hands `moequant tables`."""
        return f"{self.tables_dir()}/spec.json"

    def table_outputs(self, tables: list[str], models: list[str]) -> list[str]:
        """Every file `moequant tables` writes: per table, per model's plots, then the summaries."""
        out = self.tables_dir()
        files = [f"{out}/{table_file(name, ext)}" for name in tables for ext in TABLE_FORMATS]
        files += [f"{out}/{plot_file(kind, model)}" for model in models for kind in PLOT_KINDS]
        return files + [f"{out}/{name}" for name in SUMMARY_FILES]
