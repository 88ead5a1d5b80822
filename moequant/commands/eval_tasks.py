"""`moequant eval-tasks`: lm-eval tasks (by name, local folders, or the paper7 preset) on any `--model`."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from moequant.artifacts import write_json
from moequant.commands.eval_ppl import add_model_arguments

if TYPE_CHECKING:
    from moequant.commands.eval_ppl import LoadedModels
    from moequant.eval.config import TaskConfig
    from moequant.eval.lm_eval_bridge import PreparedTasks

NAME = "eval-tasks"
HELP = "lm-eval tasks on a model, checkpoint or Hub id: T1,T2 | paper7 | demo (with --include-path)."


def add_task_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """lm-eval flags; `moequant evaluate` passes prefix 'tasks-' for the two that perplexity also has."""
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task/group names, paper7, or demo")
    parser.add_argument("--include-path", help="folder of extra task YAMLs (e.g. written by `moequant make-tasks`)")
    parser.add_argument("--num-fewshot", type=int, help="shots for every task (default: each task's own)")
    parser.add_argument("--limit", type=float, help="documents per task (a count, or a fraction below 1)")
    parser.add_argument(f"--{prefix}batch-size", dest="task_batch_size", type=int, default=1, help="lm-eval batch size")
    parser.add_argument(
        "--allow-code-execution", action="store_true", help="consent to running model-generated code (humaneval)"
    )
    parser.add_argument(
        f"--{prefix}seed", dest="task_seed", type=int, default=0, help="seed for lm-eval's sampling and few-shot draws"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_task_arguments(parser)
    parser.add_argument("--out", required=True, help="output JSON file")


def task_config(args: argparse.Namespace) -> TaskConfig:
    from moequant.eval.config import TaskConfig

    return TaskConfig(
        tasks=args.tasks.split(","),
        include_path=args.include_path,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.task_batch_size,
        allow_code_execution=args.allow_code_execution,
        seed=args.task_seed,
    )


def evaluate_and_write(
    args: argparse.Namespace, out: str, config: TaskConfig, prepared: PreparedTasks, loaded: LoadedModels
) -> None:
    """Run the prepared tasks on the loaded model and write `out` with its provenance."""
    import lm_eval

    from moequant.eval.lm_eval_bridge import run_tasks
    from moequant.eval.provenance import model_provenance, run_metadata

    started = time.perf_counter()
    evaluated = run_tasks(loaded.model, loaded.tokenizer, prepared, config)
    write_json(
        out,
        {
            **evaluated,
            "model": model_provenance(args.model),
            "config": asdict(config),
            "lm_eval_version": getattr(lm_eval, "__version__", None),
            **run_metadata(loaded.device, loaded.dtype, loaded.seconds + time.perf_counter() - started),
        },
    )
    shown = ", ".join(f"{name} {value:.4f}" for name, value in evaluated["summary"].items())
    avg = f"; avg {evaluated['avg']:.4f}" if evaluated["avg"] is not None else ""
    print(f"{shown}{avg} -> {out}")


def run(args: argparse.Namespace) -> int:
    from moequant.commands.eval_ppl import load_models, placement
    from moequant.eval.lm_eval_bridge import prepare_tasks

    where = placement(args)
    config = task_config(args)
    prepared = prepare_tasks(config)
    evaluate_and_write(args, args.out, config, prepared, load_models(args, where))
    return 0
