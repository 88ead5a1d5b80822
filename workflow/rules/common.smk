# Shared by every rule: the config checked, the run's plan built from it (moequant/plan/:
# paths, inputs, per-stage CLI arguments, targets, resources), and the code version of each
# stage (a hash of the package modules it runs, so editing one room of the package reruns
# that stage and everything downstream, nothing upstream).

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
from moequant.code_version import code_version
from moequant.errors import UsageError
from moequant.plan.checks import check_schema
from moequant.plan.targets import report_entry
from moequant.plan.workflow import Plan, alternatives

SCHEMA = Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
CONDA_ENV = "../envs/moequant.yaml"

# One line per schema problem first; then Snakemake's validate fills the schema's defaults,
# which the plan reads; the plan refuses names that point nowhere.
try:
    check_schema(config, SCHEMA)
    validate(config, str(SCHEMA))
    PLAN = Plan(config, config["results"])
except UsageError as err:
    raise WorkflowError(str(err)) from None


wildcard_constraints:
    model=alternatives(PLAN.models),
    method=alternatives(PLAN.methods),
    calib=alternatives(PLAN.calibrations),
    bits=r"\d+",


# ---- code versions -------------------------------------------------------------------
# Each stage's code version hashes the import closure of the verb it runs (see
# moequant/code_version.py), read from this checkout's package without importing torch.

CODE = {
    stage: code_version(Path(workflow.basedir), *verbs)
    for stage, verbs in {
        "demo": ["build-demo"],
        "calibrate": ["calibrate"],
        "rotate": ["rotate"],
        "quantize": ["quantize", "validate"],
        "eval_ppl": ["eval-ppl"],
        "make_tasks": ["make-tasks"],
        "eval_tasks": ["eval-tasks"],
        "evaluate": ["evaluate"],
        "tables": ["tables"],
    }.items()
}


def evaluated(wildcards):
    """(model, method, bits) of the evaluate rule's `evaluated` wildcard."""
    return PLAN.targets.evaluated(wildcards.evaluated)


def report_item(path):
    """Tables and plots go into `snakemake --report`, each with its caption."""
    entry = report_entry(path)
    return report(path, **entry) if entry else path
