"""`moequant make-tasks`: offline lm-eval tasks from held-out text, for `eval-tasks --include-path`."""

from __future__ import annotations

import argparse

NAME = "make-tasks"
HELP = "Write local lm-eval tasks (next-segment choice, cloze) per domain from DIR/data/<domain>/test.txt."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="folder of <domain>/test.txt (the demo's DIR/data, or DIR)")
    parser.add_argument("--out", required=True, help="task folder to write (pass it to eval-tasks --include-path)")
    parser.add_argument("--group", default="demo", help="group name that runs every task (default demo)")
    parser.add_argument("--docs", type=int, default=200, help="documents per task and split (default 200)")
    parser.add_argument("--choices", type=int, default=4, help="options per multiple-choice question (default 4)")
    parser.add_argument("--context-segments", type=int, default=2, help="lines/sentences of context (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the document and distractor draw")


def run(args: argparse.Namespace) -> int:
    from moequant.eval.config import LocalTaskConfig
    from moequant.eval.local_tasks import write_local_tasks

    config = LocalTaskConfig(
        group=args.group,
        docs_per_task=args.docs,
        choices=args.choices,
        context_segments=args.context_segments,
        seed=args.seed,
    )
    manifest = write_local_tasks(args.data, args.out, config)
    counts = ", ".join(f"{name} {task['docs']['test']}" for name, task in manifest["tasks"].items())
    print(f"group {manifest['group']}: {counts} -> {args.out}")
    return 0
