# moequant workflow: demo build → calibration → rotation → quantization → evaluation → tables.
# Run: snakemake --profile profiles/default   (or --profile profiles/slurm on a cluster)
# A --configfile replaces config/config.yaml instead of merging into it.

from snakemake.utils import min_version

min_version("9.0")


if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/rotation.smk"
include: "workflow/rules/quantization.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    table_spec,


rule all:
    input:
        PLAN.targets.table_outputs(),
    default_target: True
