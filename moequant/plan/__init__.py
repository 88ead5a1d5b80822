"""The workflow's planning, read off its config: paths, checks, targets, stage arguments.

The Snakefile builds one `moequant.plan.workflow.Plan` from its config and asks it for
every path, input and argument, so all of that is plain Python that unit tests can call
without a dry run. Nothing here imports torch or transformers: the Snakemake process has
neither.

This file imports nothing on purpose. The report stage imports `moequant.plan.layout`, and
a stage's code version follows imports (`moequant/code_version.py`); an import here would
put the whole plan into the tables' code version, so editing an argument would rerun them.
"""
