"""`moequant eval-tasks`: lm-eval tasks (by name, local folders, or the paper7 preset) on any `--model`."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from moequant.artifacts import write_json
from moequant.commands.eval_ppl import add_model_arguments

NAME = "eval-tasks"
HELP = "lm-eval tasks on a model, checkpoint or Hub id: T1,T2 | paper7 | demo (with --include-path)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task/group names, paper7, or demo")
    parser.add_argument("--include-path", help="folder of extra task YAMLs (e.g. written by `moequant make-tasks`)")
    parser.add_argument("--num-fewshot", type=int, help="shots for every task (default: each task's own)")
    parser.add_argument("--limit", type=float, help="documents per task (a count, or a fraction below 1)")
    parser.add_argument("--batch-size", type=int, default=1, help="lm-eval batch size")
    parser.add_argument(
        "--allow-code-execution", action="store_true", help="consent to running model-generated code (humaneval)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for lm-eval's sampling and few-shot draws")
    parser.add_argument("--out", required=True, help="output JSON file")


def run(args: argparse.Namespace) -> int:
    import lm_eval

    from moequant.eval.config import TaskConfig, eval_dtype
    from moequant.eval.lm_eval_bridge import prepare_tasks, run_tasks
    from moequant.eval.provenance import model_provenance, run_metadata
    from moequant.models.loading import load_model, load_tokenizer
    from moequant.runtime import resolve_device

    config = TaskConfig(
        tasks=args.tasks.split(","),
        include_path=args.include_path,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        batch_size=args.batch_size,
        allow_code_execution=args.allow_code_execution,
        seed=args.seed,
    )
    device = resolve_device(args.device)
    dtype = eval_dtype(args.dtype, device)
    started = time.perf_counter()
    prepared = prepare_tasks(config)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_model(args.model, dtype=dtype, device=device, trust_remote_code=args.trust_remote_code)
    evaluated = run_tasks(model, tokenizer, prepared, config)
    write_json(
        args.out,
        {
            **evaluated,
            "model": model_provenance(args.model),
            "config": asdict(config),
            "lm_eval_version": getattr(lm_eval, "__version__", None),
            **run_metadata(device, dtype, time.perf_counter() - started),
        },
    )
    shown = ", ".join(f"{name} {value:.4f}" for name, value in evaluated["summary"].items())
    avg = f"; avg {evaluated['avg']:.4f}" if evaluated["avg"] is not None else ""
    print(f"{shown}{avg} -> {args.out}")
    return 0
