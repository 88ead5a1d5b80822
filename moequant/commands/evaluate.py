"""`moequant evaluate`: perplexity (with KL to a reference) and lm-eval tasks from one model load.

A workflow variant that a task table shows needs both; one process reads the model once
instead of twice, which is most of a small model's evaluation and minutes per Mixtral.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

from moequant.commands.eval_ppl import (
    add_model_arguments,
    add_ppl_arguments,
    load_models,
    measure_and_write,
    placement,
    plan_perplexity,
)
from moequant.commands.eval_tasks import add_task_arguments, evaluate_and_write, task_config
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
    import torch

    from moequant.eval.lm_eval_bridge import prepare_tasks

    where = placement(args, args.reference_device)
    with _part("lm-eval tasks"):
        config = task_config(args)
    prepared = prepare_tasks(config)
    with _part("perplexity"):
        plan = plan_perplexity(args, args.ppl_out, out_flag="--ppl-out")
    loaded = load_models(args, where, args.reference)
    measure_and_write(args, plan, loaded)
    loaded.reference = None
    if where.reference_device.type == "cuda":
        torch.cuda.empty_cache()
    evaluate_and_write(args, args.tasks_out, config, prepared, loaded)
    return 0
