"""`moequant evaluate`: perplexity (with KL to a reference) and lm-eval tasks from one model load.

A workflow variant that a task table shows needs both; one process reads the model once
instead of twice, which is most of a small model's evaluation and minutes per Mixtral.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from moequant.commands.eval_ppl import add_model_arguments, add_ppl_arguments, model_choice, placement, plan
from moequant.commands.eval_tasks import add_task_arguments, task_config
from moequant.errors import UsageError

NAME = "evaluate"
HELP = "Perplexity on datasets (KL with --reference) and lm-eval tasks, loading the model once."
TASK_PREFIX = "tasks-"
"""lm-eval's batch size and seed become --tasks-batch-size and --tasks-seed; perplexity keeps its own."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_ppl_arguments(parser)
    parser.add_argument("--ppl-out", required=True, help="perplexity JSON; with several datasets a path with {dataset}")
    add_task_arguments(parser, prefix=TASK_PREFIX)
    parser.add_argument("--tasks-out", required=True, help="lm-eval results JSON")


@contextlib.contextmanager
def _part(name: str) -> Iterator[None]:
    """Both halves have a batch size and a seed; say which half a bad value belongs to."""
    try:
        yield
    except UsageError as err:
        raise UsageError(f"{name}: {err}") from None


def run(args: argparse.Namespace) -> int:
    from moequant.eval.lm_eval_bridge import prepare_tasks
    from moequant.eval.session import evaluate_and_write, load_models, measure_and_write

    where = placement(args)
    with _part("lm-eval tasks"):
        config = task_config(args)
    prepared = prepare_tasks(config)
    with _part("perplexity"):
        ppl_plan = plan(args, args.ppl_out, out_flag="--ppl-out")
    choice = model_choice(args)
    loaded = load_models(choice, where)
    measure_and_write(ppl_plan, loaded, choice, progress=not args.no_progress)
    loaded.drop_reference()
    evaluate_and_write(args.tasks_out, config, prepared, loaded, choice)
    return 0
