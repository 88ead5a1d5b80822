"""`moequant build-demo`: train the small demo MoE with its corpus and tokenizer."""

from __future__ import annotations

import argparse
import json

NAME = "build-demo"
HELP = "Train the demo MoE (corpus, tokenizer, model, held-out summary) on CPU into --out."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from moequant.demo.train import DEFAULT_STEPS

    parser.add_argument("--family", default="mixtral", help="mixtral, qwen2_moe or deepseek_v3 (default mixtral)")
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"training steps (default {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, data order and arithmetic (default 0)")
    parser.add_argument("--tiny", action="store_true", help="tiny shape and corpus: a smoke-test build in seconds")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    from moequant.demo import SUMMARY, build_demo

    out = build_demo(
        args.out, args.family, args.steps, args.seed, tiny=args.tiny, progress=not args.quiet
    )
    summary = json.loads((out / SUMMARY).read_text())
    ppl = ", ".join(f"{name} {value:.2f}" for name, value in summary["perplexity"].items())
    print(f"built {summary['family']} demo in {out} ({summary['seconds']:.0f} s); held-out perplexity: {ppl}")
    return 0
