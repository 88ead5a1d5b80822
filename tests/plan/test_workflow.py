"""The plan the Snakefile builds: refuses dangling names, and imports without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from moequant.errors import UsageError
from moequant.plan.workflow import Plan, alternatives
from tests.plan.conftest import REPO


def test_a_plan_refuses_names_that_point_nowhere(load_config) -> None:
    config = load_config("test")
    config["methods"]["moequant++"]["calibration"] = "wiki"
    with pytest.raises(UsageError, match=r"^config methods.moequant\+\+.calibration: unknown set 'wiki' \(defined: ebss, mixed\)$"):
        Plan(config, "results")


def test_the_plan_lists_the_names_wildcards_may_take(load_config) -> None:
    plan = Plan(load_config("test"), "results/")
    assert (plan.models, plan.methods, plan.calibrations, plan.datasets) == (
        ["demo"],
        ["fp16", "rtn", "moequant++"],
        ["ebss", "mixed"],
        ["mixed"],
    )
    assert plan.paths.results == "results"
    assert alternatives(plan.methods) == r"fp16|rtn|moequant\+\+"
    assert alternatives([]) == "(?!)"


def test_the_plan_imports_without_torch_or_transformers() -> None:
    """The Snakemake process has neither: importing the plan must not reach them."""
    code = (
        "import sys\n"
        "sys.modules.update(torch=None, transformers=None)\n"
        "import moequant.plan.workflow, moequant.plan.checks\n"
        "print(sorted(name for name in sys.modules if name.startswith('moequant')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "moequant.report" not in result.stdout
