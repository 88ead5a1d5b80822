# Shared by every rule: config validation, the targets the tables need, per-stage CLI
# arguments (params, so a config change reruns exactly the stages it touches) and the
# code version of each stage (a hash of the package modules it runs, so editing one room of
# the package reruns that stage and everything downstream, nothing upstream).

import os
import re
import shlex
import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)
from moequant.code_version import code_version

SCHEMA = Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
CONDA_ENV = "../envs/moequant.yaml"
FP_BITS = 16
DEMO_DATA = "{data}"


def _schema_problem(err):
    """One readable line per schema violation, naming the key and what is allowed."""
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
    if err.validator == "required":
        return f"config {where}: {err.message}"
    if err.validator == "propertyNames":
        return f"config {where}: {err.message}"
    return f"config {where}: {err.instance!r} is invalid: {err.message}"


def check_schema(cfg):
    schema = yaml.safe_load(SCHEMA.read_text())
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: [str(p) for p in e.absolute_path]
    )
    if errors:
        raise WorkflowError("\n".join(sorted({_schema_problem(err) for err in errors})))


def _uses_demo_data(spec):
    return DEMO_DATA in str(spec)


def check_references(cfg):
    """What a schema cannot say: names that must point at other config entries."""
    problems = []
    demo_models = [m for m, entry in cfg["models"].items() if "demo" in entry]
    hf_models = [m for m in cfg["models"] if m not in demo_models]
    for name, method in cfg["methods"].items():
        calib = method.get("calibration")
        if method["algorithm"] == "none":
            if calib is not None:
                problems.append(f"config methods.{name}: algorithm 'none' takes no calibration (got {calib!r})")
        elif method["algorithm"] != "rtn" and calib is None:
            problems.append(f"config methods.{name}: algorithm {method['algorithm']!r} needs a calibration set")
        if calib is not None and calib not in cfg.get("calibration", {}):
            known = ", ".join(sorted(cfg.get("calibration", {}))) or "none defined"
            problems.append(f"config methods.{name}.calibration: unknown set {calib!r} (defined: {known})")
    for name, calib in cfg.get("calibration", {}).items():
        if _uses_demo_data(calib["source"]) and hf_models:
            problems.append(
                f"config calibration.{name}.source: {DEMO_DATA} exists only for demo models, not {', '.join(hf_models)}"
            )
    datasets = cfg["evaluation"]["ppl"]["datasets"]
    for name, source in datasets.items():
        if _uses_demo_data(source) and hf_models:
            problems.append(
                f"config evaluation.ppl.datasets.{name}: {DEMO_DATA} exists only for demo models, not {', '.join(hf_models)}"
            )
    tasks = cfg["evaluation"].get("tasks") or {}
    if tasks.get("include") == "demo" and hf_models:
        problems.append(f"config evaluation.tasks.include: 'demo' tasks exist only for demo models, not {', '.join(hf_models)}")
    for table_name, table in cfg["tables"].items():
        where = f"config tables.{table_name}"
        for model in table.get("models", []):
            if model not in cfg["models"]:
                problems.append(f"{where}.models: unknown model {model!r}")
        for method in table["methods"]:
            if method not in cfg["methods"]:
                problems.append(f"{where}.methods: unknown method {method!r}")
                continue
            if cfg["methods"][method]["algorithm"] != "none":
                if "bits" not in table:
                    problems.append(f"{where}: needs 'bits' for its quantized method {method!r}")
                elif table["bits"] not in method_bits(method, cfg):
                    problems.append(f"{where}: method {method!r} does not run at W{table['bits']}")
        for column in ("ppl", "kl"):
            for dataset in table.get(column, []):
                if dataset not in datasets:
                    problems.append(f"{where}.{column}: unknown dataset {dataset!r} (defined: {', '.join(datasets)})")
        if table.get("kl") and not cfg["evaluation"]["ppl"].get("kl", True):
            problems.append(f"{where}.kl: KL columns need evaluation.ppl.kl: true")
        for task in table.get("tasks", []):
            if task not in tasks.get("names", []):
                problems.append(f"{where}.tasks: task {task!r} is not in evaluation.tasks.names")
    plot_dataset = cfg.get("plots", {}).get("ppl_dataset")
    if plot_dataset is not None and plot_dataset not in datasets:
        problems.append(f"config plots.ppl_dataset: unknown dataset {plot_dataset!r}")
    if problems:
        raise WorkflowError("\n".join(problems))


def method_bits(method, cfg=None):
    cfg = cfg or config
    entry = cfg["methods"][method]
    if entry["algorithm"] == "none":
        return [FP_BITS]
    return entry.get("bits") or cfg["bits"]


check_schema(config)
validate(config, str(SCHEMA))
check_references(config)

RESULTS = config["results"].rstrip("/")
MODELS = list(config["models"])
METHODS = list(config["methods"])
CALIBS = list(config["calibration"])
DATASETS = list(config["evaluation"]["ppl"]["datasets"])
TASKS = config["evaluation"].get("tasks") or {"names": [], "include": None, "options": {}, "docs": 200}


def _alternatives(names):
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    model=_alternatives(MODELS),
    method=_alternatives(METHODS),
    calib=_alternatives(CALIBS),
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


# ---- resources -----------------------------------------------------------------------

STAGE_DEFAULTS = {
    "build_demo": {"threads": 2, "mem_mb": 4000, "runtime": 60, "gpu": 0},
    "calibrate": {"threads": 1, "mem_mb": 4000, "runtime": 60, "gpu": 1},
    "rotate": {"threads": 1, "mem_mb": 4000, "runtime": 30, "gpu": 1},
    "quantize": {"threads": 1, "mem_mb": 4000, "runtime": 120, "gpu": 1},
    "eval_ppl": {"threads": 1, "mem_mb": 4000, "runtime": 60, "gpu": 1},
    "make_tasks": {"threads": 1, "mem_mb": 2000, "runtime": 10, "gpu": 0},
    "eval_tasks": {"threads": 1, "mem_mb": 4000, "runtime": 120, "gpu": 1},
    "tables": {"threads": 1, "mem_mb": 2000, "runtime": 10, "gpu": 0},
}


def stage(name, key):
    return config["resources"].get(name, {}).get(key, STAGE_DEFAULTS[name][key])


def evaluate_resource(key):
    """The combined evaluation job holds both stages' work: unless configured itself, the
    larger footprint and the summed runtime."""
    combine = sum if key == "runtime" else max
    both = combine(stage(name, key) for name in ("eval_ppl", "eval_tasks"))
    return config["resources"].get("evaluate", {}).get(key, both)


# ---- paths ---------------------------------------------------------------------------


def is_demo(model):
    return "demo" in config["models"][model]


def model_dir(model):
    return f"{RESULTS}/{model}/model"


def base_model(model):
    """What `--model` names for the original fp model: the built demo or the HF id/dir."""
    return model_dir(model) if is_demo(model) else config["models"][model]["hf"]


def base_model_inputs(model):
    entry = config["models"][model]
    if is_demo(model):
        return [model_dir(model)]
    return [entry["hf"]] if Path(entry["hf"]).exists() else []


def resolve_source(source, model):
    """Expand {data} (the demo's data folder) inside a `text:PATH` source."""
    return source.replace(DEMO_DATA, f"{model_dir(model)}/data")


def local_text_input(source, model):
    """A local text file a source reads is an input (so editing it reruns), unless it lies in the demo."""
    if source.startswith("text:") and not _uses_demo_data(source):
        return [source[len("text:") :]]
    return []


def calib_file(model, calib):
    return f"{RESULTS}/{model}/calib/{calib}.jsonl"


def calib_summary(model, calib):
    return f"{RESULTS}/{model}/calib/{calib}.summary.json"


def variant(method, bits):
    return f"{method}-w{bits}"


def quant_dir(model, method, bits):
    return f"{RESULTS}/{model}/quant/{variant(method, bits)}"


def model_under_test(model, method, bits):
    if config["methods"][method]["algorithm"] == "none":
        return base_model(model)
    return quant_dir(model, method, bits)


def model_under_test_inputs(model, method, bits):
    if config["methods"][method]["algorithm"] == "none":
        return base_model_inputs(model)
    return [quant_dir(model, method, bits)]


def evaluation_key(model, method, bits):
    """A variant's evaluation folder below the results folder (the `evaluated` wildcard)."""
    return f"{model}/eval/{variant(method, bits)}"


def eval_dir(model, method, bits):
    return f"{RESULTS}/{evaluation_key(model, method, bits)}"


def tasks_dir(model):
    return f"{RESULTS}/{model}/tasks"


def log_path(*parts):
    return f"{os.path.join(RESULTS, 'logs', *parts)}.log"


def bench_path(*parts):
    return f"{os.path.join(RESULTS, 'benchmarks', *parts)}.tsv"


def ppl_file(model, method, bits, dataset):
    return os.path.join(eval_dir(model, method, bits), f"ppl-{dataset}.json")


def tasks_file(model, method, bits):
    return os.path.join(eval_dir(model, method, bits), "tasks.json")


def rotated_dir(model):
    return f"{RESULTS}/{model}/rotated"


def remote_code_flags(model):
    return ["--trust-remote-code"] if config["models"][model].get("trust_remote_code") else []


def option_flags(options):
    """Config options become CLI flags: {groupsize: 128, act_order: true} → --groupsize 128 --act-order."""
    flags = []
    for key in sorted(options):
        value = options[key]
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif value is False:
            continue
        else:
            flags.extend([flag, shlex.quote(str(value))])
    return flags


# ---- what the tables need ------------------------------------------------------------


def table_models(table):
    return table.get("models") or MODELS


def table_needs():
    """Every (model, method, bits) evaluation the tables and plots read, with what they read."""
    needs = {}
    plot_dataset = config["plots"].get("ppl_dataset") or DATASETS[0]
    for table in config["tables"].values():
        for model in table_models(table):
            for method in table["methods"]:
                bits = FP_BITS if config["methods"][method]["algorithm"] == "none" else table["bits"]
                entry = needs.setdefault((model, method, bits), {"ppl": set(), "tasks": False})
                entry["ppl"].update(table.get("ppl", []), table.get("kl", []))
                entry["tasks"] = entry["tasks"] or bool(table.get("tasks"))
                for other in method_bits(method):
                    needs.setdefault((model, method, other), {"ppl": set(), "tasks": False})["ppl"].add(plot_dataset)
    return needs


def evaluation_files():
    files = []
    for (model, method, bits), need in sorted(table_needs().items(), key=str):
        files += [ppl_file(model, method, bits, dataset) for dataset in sorted(need["ppl"])]
        if need["tasks"]:
            files.append(tasks_file(model, method, bits))
    return files


def evaluated_with_tasks():
    """Variants a task table shows, by evaluation key: each gets one job for perplexity and tasks."""
    return {evaluation_key(*key): key for key, need in table_needs().items() if need["tasks"]}


EVALUATED_WITH_TASKS = evaluated_with_tasks()


def calibration_summaries():
    """σ and expert usage of every calibration set a tabled method of a model uses."""
    wanted = set()
    for table in config["tables"].values():
        for model in table_models(table):
            for method in table["methods"]:
                calib = config["methods"][method]["calibration"]
                if calib is not None:
                    wanted.add((model, calib))
    return [calib_summary(model, calib) for model, calib in sorted(wanted)]


def table_outputs():
    out = f"{RESULTS}/tables"
    files = [f"{out}/{name}.{ext}" for name in config["tables"] for ext in ("csv", "md")]
    files += [f"{out}/{kind}-{model}.png" for model in MODELS for kind in ("ppl_vs_bits", "expert_usage")]
    return files + [f"{out}/tables.md", f"{out}/results.csv", f"{out}/findings.md"]


def report_spec():
    """What `moequant tables` needs to lay results out as the paper does."""
    return {
        "models": {m: {"label": e.get("label", m)} for m, e in config["models"].items()},
        "methods": {
            name: {
                "label": entry.get("label", name),
                "calibration": entry.get("calibration"),
                "bits": method_bits(name),
                "rotation": bool(entry.get("rotation", False)),
                "algorithm": entry.get("algorithm"),
                "all_experts": bool(entry.get("options", {}).get("all_experts", False)),
            }
            for name, entry in config["methods"].items()
        },
        "calibration": {
            name: {"label": entry.get("label", name), "source": entry.get("source")}
            for name, entry in config["calibration"].items()
        },
        "tables": [{"name": name, **table} for name, table in config["tables"].items()],
        "plots": {"ppl_dataset": config["plots"].get("ppl_dataset") or DATASETS[0]},
    }


# ---- per-stage command-line arguments and inputs --------------------------------------


def demo_args(model):
    demo = config["models"][model]["demo"]
    args = [f"--family {demo['family']}", f"--seed {demo['seed']}"]
    if "steps" in demo:
        args.append(f"--steps {demo['steps']}")
    if demo["tiny"]:
        args.append("--tiny")
    return " ".join(args + ["--quiet"])


def calibrate_args(model, calib):
    entry = config["calibration"][calib]
    args = [
        f"--source {shlex.quote(resolve_source(entry['source'], model))}",
        f"--nsamples {entry['nsamples']}",
        f"--seqlen {entry['seqlen']}",
        f"--seed {entry['seed']}",
    ]
    if "tau" in entry:
        args.append(f"--tau {entry['tau']}")
    if "width" in entry:
        args.append(f"--width {entry['width']}")
    return " ".join(args + remote_code_flags(model))


def calibrate_inputs(wildcards):
    source = config["calibration"][wildcards.calib]["source"]
    return base_model_inputs(wildcards.model) + local_text_input(source, wildcards.model)


def rotate_args(model):
    return " ".join([f"--seed {config['models'][model]['rotation_seed']}", *remote_code_flags(model)])


def quantize_source(model, method):
    return rotated_dir(model) if config["methods"][method]["rotation"] else base_model(model)


def quantize_inputs(wildcards):
    model, entry = wildcards.model, config["methods"][wildcards.method]
    inputs = [rotated_dir(model)] if entry["rotation"] else base_model_inputs(model)
    if entry["calibration"] is not None:
        inputs.append(calib_file(model, entry["calibration"]))
    return inputs


def quantize_args(model, method, bits):
    entry = config["methods"][method]
    args = [f"--algo {entry['algorithm']}", f"--wbits {bits}"]
    if entry["calibration"] is not None:
        args.append(f"--calib {calib_file(model, entry['calibration'])}")
    return " ".join(args + option_flags(entry["options"]) + remote_code_flags(model))


def is_fp(method):
    return config["methods"][method]["algorithm"] == "none"


def eval_ppl_inputs(wildcards):
    return ppl_inputs(wildcards.model, wildcards.method, wildcards.bits)


def ppl_inputs(model, method, bits):
    inputs = model_under_test_inputs(model, method, bits)
    for source in config["evaluation"]["ppl"]["datasets"].values():
        inputs += local_text_input(source, model)
    if config["evaluation"]["ppl"]["kl"] and not is_fp(method):
        inputs += base_model_inputs(model)
    return sorted(set(inputs))


def eval_ppl_args(model, method):
    """Every configured dataset in one job: the model (and the fp reference) is loaded once."""
    ppl = config["evaluation"]["ppl"]
    args = [f"--dataset {shlex.quote(f'{name}={resolve_source(source, model)}')}" for name, source in ppl["datasets"].items()]
    args += [f"--seqlen {ppl['seqlen']}", f"--batch-size {ppl['batch_size']}"]
    if ppl["max_windows"] is not None:
        args.append(f"--max-windows {ppl['max_windows']}")
    if ppl["kl"] and not is_fp(method):
        args.append(f"--reference {base_model(model)}")
    return " ".join(args + remote_code_flags(model))


def eval_ppl_out(model, method, bits):
    return shlex.quote(ppl_file(model, method, bits, "{dataset}"))


def task_include(model):
    folder = TASKS.get("include")
    return tasks_dir(model) if folder == "demo" else folder


def eval_tasks_inputs(wildcards):
    return tasks_inputs(wildcards.model, wildcards.method, wildcards.bits)


def tasks_inputs(model, method, bits):
    folder = task_include(model)
    return model_under_test_inputs(model, method, bits) + ([folder] if folder else [])


TASK_OPTIONS_PPL_ALSO_HAS = ("batch_size", "seed")


def task_flags(model, prefix=""):
    """`eval-tasks` flags; `evaluate` (prefix 'tasks_') spells the two that perplexity also
    has as --tasks-batch-size and --tasks-seed."""
    args = [f"--tasks {','.join(TASKS['names'])}"]
    folder = task_include(model)
    if folder:
        args.append(f"--include-path {folder}")
    options = {
        (prefix + key if key in TASK_OPTIONS_PPL_ALSO_HAS else key): value
        for key, value in TASKS.get("options", {}).items()
    }
    return args + option_flags(options)


def eval_tasks_args(model):
    return " ".join(task_flags(model) + remote_code_flags(model))


def evaluated(wildcards):
    return EVALUATED_WITH_TASKS[wildcards.evaluated]


def evaluate_inputs(wildcards):
    variant_key = evaluated(wildcards)
    return sorted(set(ppl_inputs(*variant_key) + tasks_inputs(*variant_key)))


def evaluate_args(wildcards):
    """eval-ppl's flags (remote-code flag included) plus the task flags."""
    model, method, bits = evaluated(wildcards)
    args = [
        eval_ppl_args(model, method),
        f"--ppl-out {eval_ppl_out(model, method, bits)}",
        *task_flags(model, prefix="tasks_"),
        f"--tasks-out {shlex.quote(tasks_file(model, method, bits))}",
    ]
    return " ".join(args)


def report_item(path):
    """Tables and plots go into `snakemake --report`, each with its caption."""
    name = Path(path).name
    if name.endswith(".csv") and name != "results.csv":
        return report(path, caption="../report/table.rst", category="Tables", labels={"table": Path(name).stem})
    if name.startswith("ppl_vs_bits-"):
        return report(path, caption="../report/ppl_vs_bits.rst", category="Plots", labels={"plot": Path(name).stem})
    if name.startswith("expert_usage-"):
        return report(path, caption="../report/expert_usage.rst", category="Plots", labels={"plot": Path(name).stem})
    return path
