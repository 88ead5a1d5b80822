"""`moequant eval-ppl`: perplexity (and KL to a reference) of a model, checkpoint or Hub id.

Several `--dataset NAME=SPEC` share one model load and one reference load: on a laptop the
process start-up and the loads cost more than a small text's forward, and on a cluster
reading Mixtral twice per dataset is the expensive part. The session itself (checks, one
load, measure, write) is `moequant.eval.session`; this module holds the flags.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moequant.eval.config import PerplexityConfig
    from moequant.eval.session import ModelChoice, Placement, PerplexityPlan

NAME = "eval-ppl"
HELP = "Perplexity on wikitext2, c4 or text:PATH; with --reference also KL divergence and top-1 agreement."


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags both evaluation verbs share: what to load, where, in which precision."""
    parser.add_argument("--model", required=True, help="HF id, model directory or quantized checkpoint directory")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N], or all (spread over every visible GPU)")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, float32 on CPU) or a torch dtype name")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model directory")


def add_ppl_arguments(parser: argparse.ArgumentParser) -> None:
    """Which texts, which windows, and the reference: shared with `moequant evaluate`."""
    parser.add_argument(
        "--dataset",
        required=True,
        action="append",
        help="wikitext2, c4 or text:PATH (.txt or .jsonl with 'text'), optionally NAME=SPEC; repeat for several",
    )
    parser.add_argument("--seqlen", type=int, default=2048, help="window length in tokens (default 2048)")
    parser.add_argument("--reference", help="full-precision model for KL(reference‖model) and top-1 agreement")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    parser.add_argument("--max-windows", type=int, help="evaluate only the first N windows of each dataset")
    parser.add_argument("--random-windows", type=int, default=256, help="windows drawn from c4 (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the c4 window draw (default 0)")
    parser.add_argument("--data-path", help="local copy of the Hub dataset (save_to_disk dir, repo clone or file)")
    parser.add_argument("--reference-device", help="device of the reference model (default: --device)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_ppl_arguments(parser)
    parser.add_argument("--out", required=True, help="output JSON file; with several datasets a path with {dataset}")


def model_choice(args: argparse.Namespace) -> ModelChoice:
    from moequant.eval.session import ModelChoice

    return ModelChoice(args.model, getattr(args, "reference", None), args.trust_remote_code)


def placement(args: argparse.Namespace) -> Placement:
    from moequant.eval.session import Placement

    return Placement.resolve(args.device, args.dtype, getattr(args, "reference_device", None))


def ppl_settings(args: argparse.Namespace, dataset: str) -> PerplexityConfig:
    from moequant.eval.config import PerplexityConfig

    return PerplexityConfig(
        dataset=dataset,
        seqlen=args.seqlen,
        batch_size=args.batch_size,
        max_windows=args.max_windows,
        random_windows=args.random_windows,
        seed=args.seed,
        data_path=args.data_path,
    )


def plan(args: argparse.Namespace, out: str, out_flag: str = "--out") -> PerplexityPlan:
    from moequant.eval.session import parse_datasets, plan_perplexity

    datasets = parse_datasets(args.dataset, out, out_flag)
    return plan_perplexity(datasets, ppl_settings(args, next(iter(datasets.values()))), out, model_choice(args))


def run(args: argparse.Namespace) -> int:
    from moequant.eval.session import load_models, measure_and_write

    where = placement(args)
    ppl_plan = plan(args, args.out)
    choice = model_choice(args)
    measure_and_write(ppl_plan, load_models(choice, where), choice, progress=not args.no_progress)
    return 0
