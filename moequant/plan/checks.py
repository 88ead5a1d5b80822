"""A bad config stops the workflow before any job, with one line per problem.

Each line names the key, the bad value and what is allowed, so a typo reads as a typo and
not as a Snakemake traceback or a job that fails an hour in. The schema's own messages are
rewritten to that shape (`schema_problems`); what a schema cannot say, names that must
point at other entries of the config and what each algorithm takes (`plan/algorithms.py`),
is checked by `reference_problems`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from moequant.errors import UsageError
from moequant.plan.algorithms import ALGORITHMS, method_options, takers
from moequant.plan.config import Config, datasets, hf_models, method_bits, tasks
from moequant.plan.layout import DEMO_DATA, uses_demo_data


def _schema_problem(err: jsonschema.ValidationError) -> str:
    where = ".".join(str(part) for part in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"config {where}: unknown key {', '.join(map(repr, extra))}{hint}"
    if err.validator == "enum":
        return f"config {where}: {err.instance!r} is not one of {', '.join(map(repr, err.validator_value))}"
    if err.validator == "oneOf" and where.startswith("models."):
        return f"config {where}: give exactly one of 'hf' (a Hugging Face id or model directory) or 'demo'"
    if err.validator in ("required", "propertyNames"):
        return f"config {where}: {err.message}"
    return f"config {where}: {err.instance!r} is invalid: {err.message}"


def schema_problems(config: Config, schema: dict[str, Any]) -> list[str]:
    """Every schema violation as one line, sorted, each line once."""
    errors = jsonschema.Draft202012Validator(schema).iter_errors(config)
    return sorted({_schema_problem(err) for err in errors})


def check_schema(config: Config, schema_file: str | Path) -> None:
    problems = schema_problems(config, yaml.safe_load(Path(schema_file).read_text()))
    if problems:
        raise UsageError("\n".join(problems))


def _demo_only(where: str, what: str, hf: list[str]) -> str:
    return f"config {where}: {what} only for demo models, not {', '.join(hf)}"


def _option_problems(where: str, algorithm: str, options: dict[str, Any]) -> list[str]:
    """Each `options` key must be a flag `moequant quantize --algo ALGORITHM` takes."""
    allowed = method_options(algorithm)
    problems = []
    for key in sorted(set(options) - set(allowed)):
        others = takers(key)
        what = f"{key!r} is an option of {', '.join(others)}, not of" if others else f"unknown key {key!r} for"
        problems.append(f"config {where}.options: {what} algorithm {algorithm!r} (allowed: {', '.join(allowed)})")
    return problems


def _method_problems(config: Config) -> list[str]:
    problems = []
    defined = config.get("calibration", {})
    for name, method in config["methods"].items():
        calib, algorithm, options = method.get("calibration"), method["algorithm"], method.get("options", {})
        if algorithm == "none":
            if calib is not None:
                problems.append(f"config methods.{name}: algorithm 'none' takes no calibration (got {calib!r})")
            if options:
                problems.append(f"config methods.{name}: algorithm 'none' takes no options (got {options!r})")
        else:
            if ALGORITHMS[algorithm].needs_calibration and calib is None:
                problems.append(f"config methods.{name}: algorithm {algorithm!r} needs a calibration set")
            problems += _option_problems(f"methods.{name}", algorithm, options)
        if calib is not None and calib not in defined:
            known = ", ".join(sorted(defined)) or "none defined"
            problems.append(f"config methods.{name}.calibration: unknown set {calib!r} (defined: {known})")
    return problems


def _demo_data_problems(config: Config) -> list[str]:
    """`{data}` and `include: demo` name the demo's folders, which a Hub model does not have."""
    hf = hf_models(config)
    if not hf:
        return []
    problems = [
        _demo_only(f"calibration.{name}.source", f"{DEMO_DATA} exists", hf)
        for name, calib in config.get("calibration", {}).items()
        if uses_demo_data(calib["source"])
    ]
    problems += [
        _demo_only(f"evaluation.ppl.datasets.{name}", f"{DEMO_DATA} exists", hf)
        for name, source in datasets(config).items()
        if uses_demo_data(source)
    ]
    if tasks(config).get("include") == "demo":
        problems.append(_demo_only("evaluation.tasks.include", "'demo' tasks exist", hf))
    return problems


def _table_problems(config: Config, table_name: str, table: dict[str, Any]) -> list[str]:
    where = f"config tables.{table_name}"
    problems = [f"{where}.models: unknown model {model!r}" for model in table.get("models", []) if model not in config["models"]]
    for method in table["methods"]:
        if method not in config["methods"]:
            problems.append(f"{where}.methods: unknown method {method!r}")
        elif config["methods"][method]["algorithm"] != "none":
            if "bits" not in table:
                problems.append(f"{where}: needs 'bits' for its quantized method {method!r}")
            elif table["bits"] not in method_bits(config, method):
                problems.append(f"{where}: method {method!r} does not run at W{table['bits']}")
    defined = datasets(config)
    for column in ("ppl", "kl"):
        for dataset in table.get(column, []):
            if dataset not in defined:
                problems.append(f"{where}.{column}: unknown dataset {dataset!r} (defined: {', '.join(defined)})")
    if table.get("kl") and not config["evaluation"]["ppl"].get("kl", True):
        problems.append(f"{where}.kl: KL columns need evaluation.ppl.kl: true")
    task_names = tasks(config).get("names", [])
    problems += [f"{where}.tasks: task {task!r} is not in evaluation.tasks.names" for task in table.get("tasks", []) if task not in task_names]
    return problems


def reference_problems(config: Config) -> list[str]:
    """What a schema cannot say: names that must point at other config entries, in config order."""
    problems = _method_problems(config) + _demo_data_problems(config)
    for table_name, table in config["tables"].items():
        problems += _table_problems(config, table_name, table)
    plot_dataset = config.get("plots", {}).get("ppl_dataset")
    if plot_dataset is not None and plot_dataset not in datasets(config):
        problems.append(f"config plots.ppl_dataset: unknown dataset {plot_dataset!r}")
    return problems


def check_references(config: Config) -> None:
    problems = reference_problems(config)
    if problems:
        raise UsageError("\n".join(problems))
