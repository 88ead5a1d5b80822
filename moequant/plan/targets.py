"""What a run builds: exactly what its tables and plots read, and nothing else.

Targets are derived from the `tables` section, so a config may define calibration sets and
methods that no table shows yet without paying for them. The same section becomes the
spec `moequant tables` lays the results out by.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from moequant.plan.config import Config, is_fp, method_bits, plot_dataset, table_models
from moequant.plan.layout import FP_BITS, PLOT_KINDS, SUMMARY_FILES, Layout
from moequant.plan.seeds import SeedRuns

Variant = tuple[str, str, int]
"""(model, method, bits) of one evaluated model."""


class Targets:
    def __init__(self, config: Config, layout: Layout, seeds: SeedRuns | None = None) -> None:
        self.config = config
        self.layout = layout
        self.seeds = seeds or SeedRuns(config)

    def table_needs(self) -> dict[Variant, dict[str, Any]]:
        """Every evaluation the tables and plots read, with what they read: the perplexity
        datasets (`ppl`, a set) and whether the tasks (`tasks`). The plot reads its dataset at
        every width a tabled method runs at, not only at the table's."""
        needs: dict[Variant, dict[str, Any]] = {}
        plotted = plot_dataset(self.config)
        for table in self.config["tables"].values():
            for model in table_models(self.config, table):
                for method in table["methods"]:
                    bits = FP_BITS if is_fp(self.config, method) else table["bits"]
                    entry = needs.setdefault((model, method, bits), {"ppl": set(), "tasks": False})
                    entry["ppl"].update(table.get("ppl", []), table.get("kl", []))
                    entry["tasks"] = entry["tasks"] or bool(table.get("tasks"))
                    for other in method_bits(self.config, method):
                        needs.setdefault((model, method, other), {"ppl": set(), "tasks": False})["ppl"].add(plotted)
        return needs

    def evaluation_files(self) -> list[str]:
        files = []
        for (model, method, bits), need in sorted(self.table_needs().items(), key=str):
            files += [self.layout.ppl_file(model, method, bits, dataset) for dataset in sorted(need["ppl"])]
            if need["tasks"]:
                files.append(self.layout.tasks_file(model, method, bits))
        return files

    @functools.cached_property
    def evaluated_with_tasks(self) -> dict[str, Variant]:
        """Variants a task table shows, by evaluation key: each gets one job for perplexity and tasks."""
        return {self.layout.evaluation_key(*key): key for key, need in self.table_needs().items() if need["tasks"]}

    def evaluated(self, key: str) -> Variant:
        """The variant of an `evaluated` wildcard."""
        return self.evaluated_with_tasks[key]

    def calibration_summaries(self) -> list[str]:
        """σ and expert usage of every calibration set a tabled method of a model uses."""
        wanted = set()
        for table in self.config["tables"].values():
            for model in table_models(self.config, table):
                for method in table["methods"]:
                    calib = self.config["methods"][method]["calibration"]
                    if calib is not None:
                        wanted.add((model, calib))
        return [self.layout.calib_summary(model, calib) for model, calib in sorted(wanted)]

    def table_outputs(self) -> list[str]:
        return self.layout.table_outputs(list(self.config["tables"]), list(self.config["models"]))

    def report_spec(self) -> dict[str, Any]:
        """What `moequant tables` needs to lay results out as the paper does.

        A seeded config's tables name its methods as written; `seed_groups` says which runs
        each stands for, and the written methods and sets are described beside their runs.
        """
        written = self.seeds.written or {"methods": {}, "calibration": {}, "tables": self.config["tables"]}
        methods = {**written["methods"], **self.config["methods"]}
        calibration = {**written["calibration"], **self.config["calibration"]}
        return {
            "models": {m: {"label": e.get("label", m)} for m, e in self.config["models"].items()},
            "methods": {
                name: {
                    "label": entry.get("label", name),
                    "calibration": entry.get("calibration"),
                    "bits": method_bits({**self.config, "methods": methods}, name),
                    "rotation": bool(entry.get("rotation", False)),
                    "algorithm": entry.get("algorithm"),
                    "all_experts": bool(entry.get("options", {}).get("all_experts", False)),
                }
                for name, entry in methods.items()
            },
            "calibration": {
                name: {
                    "label": entry.get("label", name),
                    "source": entry.get("source"),
                    **({"no_repeat_ngram": entry["no_repeat_ngram"]} if entry.get("no_repeat_ngram") else {}),
                }
                for name, entry in calibration.items()
            },
            "tables": [{"name": name, **table} for name, table in written["tables"].items()],
            "plots": {"ppl_dataset": plot_dataset(self.config)},
            "seed_groups": {"methods": self.seeds.methods, "calibration": self.seeds.calibrations},
        }


def report_entry(path: str) -> dict[str, Any] | None:
    """How a table output appears in `snakemake --report` (caption, category, labels), or None
    for one that appears plainly. Captions are relative to the rules folder."""
    name = Path(path).name
    stem = Path(name).stem
    if name.endswith(".csv") and name not in SUMMARY_FILES:
        return {"caption": "../report/table.rst", "category": "Tables", "labels": {"table": stem}}
    for kind in PLOT_KINDS:
        if name.startswith(f"{kind}-"):
            return {"caption": f"../report/{kind}.rst", "category": "Plots", "labels": {"plot": stem}}
    return None
