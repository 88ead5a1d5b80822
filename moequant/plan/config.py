"""Facts a workflow config implies that several parts of the plan read.

The config is the dict Snakemake loaded, validated against
`workflow/schemas/config.schema.yaml` with its defaults filled in. What it leaves implicit
(a method without `bits` runs at every configured width, the fp method only at 16 bits, an
absent `evaluation.tasks` means no tasks) is decided here once, so the checks, the targets
and the stage arguments cannot disagree about it.
"""

from __future__ import annotations

from typing import Any

from moequant.plan.layout import FP_BITS

Config = dict[str, Any]


def is_demo(config: Config, model: str) -> bool:
    return "demo" in config["models"][model]


def is_fp(config: Config, method: str) -> bool:
    """The fp method (algorithm `none`) evaluates the original model: nothing to quantize."""
    return config["methods"][method]["algorithm"] == "none"


def method_bits(config: Config, method: str) -> list[int]:
    """The widths a method runs at: its own `bits`, else the config's; the fp method only at 16."""
    entry = config["methods"][method]
    if entry["algorithm"] == "none":
        return [FP_BITS]
    return entry.get("bits") or config["bits"]


def hf_models(config: Config) -> list[str]:
    """Models loaded from the Hub or a directory, which have no demo data folder."""
    return [model for model in config["models"] if not is_demo(config, model)]


def datasets(config: Config) -> dict[str, str]:
    """Perplexity dataset name → source, in config order."""
    return config["evaluation"]["ppl"]["datasets"]


def tasks(config: Config) -> dict[str, Any]:
    """An absent `evaluation.tasks` is no tasks, with the defaults its schema would fill."""
    return config["evaluation"].get("tasks") or {"names": [], "include": None, "options": {}, "docs": 200}


def plot_dataset(config: Config) -> str:
    """The perplexity-vs-bits plot's dataset: the configured one, else the first."""
    return config["plots"].get("ppl_dataset") or next(iter(datasets(config)))


def table_models(config: Config, table: dict[str, Any]) -> list[str]:
    """A table without `models` shows every model."""
    return table.get("models") or list(config["models"])
