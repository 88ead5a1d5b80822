"""One workflow run's plan, built from its config: what the Snakefile asks for everything.

`Plan(config, results)` takes the config Snakemake loaded (schema-validated, defaults
filled) and refuses one whose names do not resolve, so every later lookup of a method's
calibration set or a table's dataset can trust the name. The rules then read paths from
`plan.paths`, input files and model names from `plan.inputs`, argument strings from
`plan.args`, targets from `plan.targets` and job sizes from `plan.resources`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from moequant.plan.arguments import Arguments
from moequant.plan.checks import check_references
from moequant.plan.config import Config, datasets, tasks
from moequant.plan.inputs import Inputs
from moequant.plan.layout import Layout
from moequant.plan.resources import Resources
from moequant.plan.seeds import expand_seeds
from moequant.plan.targets import Targets


def alternatives(names: Iterable[str]) -> str:
    """A wildcard constraint matching exactly these names; with none, a pattern that matches nothing."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


class Plan:
    def __init__(self, config: Config, results: str) -> None:
        check_references(config)
        runs = expand_seeds(config)
        config = runs.config
        self.config = config
        self.paths = Layout(results)
        self.inputs = Inputs(config, self.paths)
        self.args = Arguments(config, self.paths, self.inputs)
        self.targets = Targets(config, self.paths, runs)
        self.resources = Resources(config)
        self.models = list(config["models"])
        self.methods = list(config["methods"])
        self.calibrations = list(config["calibration"])
        self.datasets = list(datasets(config))
        self.tasks = tasks(config)
