"""Calibration seeds: one config entry, a run per seed, and tables that show the spread.

A config's `seeds` names calibration seeds. Every calibration set is then drawn once per
seed (`{set}.seed{s}`: the set's entry with that `seed`), and every calibrated method runs
once per seed on its set's copy (`{method}.seed{s}`). Methods without calibration data
(the fp model, RTN) are deterministic and run once. Tables keep the method names as
written; the report shows each seeded method as the mean over its runs with their spread
(`moequant/report/tables.py`). Expanding the config here, before anything else reads it,
lets every other part of the plan stay unaware of seeds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from moequant.plan.config import Config

SEED_MARK = ".seed"


def seeded(name: str, seed: int) -> str:
    """The name of `name`'s run under one calibration seed."""
    return f"{name}{SEED_MARK}{seed}"


@dataclass(frozen=True)
class SeedRuns:
    """The config that runs, and which of its methods and sets are seeded runs of a written one."""

    config: Config
    methods: dict[str, list[str]] = field(default_factory=dict)
    calibrations: dict[str, list[str]] = field(default_factory=dict)
    written: Config | None = None
    """The config as written (seeded configs only): its method and set names are what tables show."""


def expand_seeds(config: Config) -> SeedRuns:
    seeds = config.get("seeds") or []
    if not seeds:
        return SeedRuns(config)
    calibrations = {name: [seeded(name, seed) for seed in seeds] for name in config["calibration"]}
    methods = {
        name: [seeded(name, seed) for seed in seeds]
        for name, entry in config["methods"].items()
        if entry.get("calibration") is not None
    }
    runs = copy.deepcopy(config)
    runs["calibration"] = {
        seeded(name, seed): {**entry, "seed": seed, "label": f"{entry.get('label', name)} (seed {seed})"}
        for name, entry in config["calibration"].items()
        for seed in seeds
    }
    runs["methods"] = {}
    for name, entry in config["methods"].items():
        if name not in methods:
            runs["methods"][name] = entry
            continue
        for seed in seeds:
            runs["methods"][seeded(name, seed)] = {
                **entry,
                "calibration": seeded(entry["calibration"], seed),
                "label": f"{entry.get('label', name)} (seed {seed})",
            }
    for table in runs["tables"].values():
        table["methods"] = [run for method in table["methods"] for run in methods.get(method, [method])]
    return SeedRuns(runs, methods, calibrations, copy.deepcopy(config))
