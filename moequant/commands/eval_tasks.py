"""`moequant eval-tasks`: lm-eval tasks (by name, local folders, or the paper7 preset) on any `--model`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from moequant.commands.eval_ppl import add_model_arguments

if TYPE_CHECKING:
    from moequant.eval.config import TaskConfig

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


def run(args: argparse.Namespace) -> int:
    from moequant.commands.eval_ppl import model_choice, placement
    from moequant.eval.lm_eval_bridge import prepare_tasks
    from moequant.eval.session import evaluate_and_write, load_models

    where = placement(args)
    config = task_config(args)
    prepared = prepare_tasks(config)
    choice = model_choice(args)
    evaluate_and_write(args.out, config, prepared, load_models(choice, where), choice)
    return 0
