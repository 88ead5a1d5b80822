"""EBSS speed: the batched KV-cached search against the naive reference search.

The reference runs one sequence at a time, re-runs the whole prefix at every step and
scores every vocabulary token; both must produce the same sequences. Prints tokens/s of
each, the speed ratio, and whether the sequences agree, as a markdown table row.

    python bench/ebss_speed.py --model DIR [--nsamples 8 --seqlen 64 --width 4]
    python bench/ebss_speed.py --demo-steps 300      # builds the demo model first
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from moequant.calib.ebss import ebss_generate, first_tokens
from tests.calib.ebss_reference import ebss_reference
from moequant.calib.vocab import tokenizer_allowed_mask
from moequant.models import adapt
from moequant.loading import load_model, load_tokenizer
from moequant.runtime import resolve_dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: build the demo model)")
    parser.add_argument("--demo-steps", type=int, default=300, help="training steps when building the demo")
    parser.add_argument("--nsamples", type=int, default=8)
    parser.add_argument("--seqlen", type=int, default=64)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--tau", type=float, default=1.2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model_dir = args.model
    if model_dir is None:
        from moequant.demo import build_demo

        model_dir = str(build_demo(tempfile.mkdtemp(prefix="ebss-bench-"), steps=args.demo_steps, seed=0))
    dtype = resolve_dtype(args.dtype)
    model = load_model(model_dir, dtype=dtype)
    if dtype == torch.float64:
        model.set_experts_implementation("eager")
    tokenizer = load_tokenizer(model_dir)
    adapter = adapt(model)
    allowed = tokenizer_allowed_mask(tokenizer, adapter.lm_head.out_features)
    first = first_tokens(allowed, args.nsamples, seed=0)
    tokens = args.nsamples * args.seqlen

    start = time.perf_counter()
    fast = ebss_generate(adapter, first, allowed, args.seqlen, args.tau, args.width, batch_size=args.nsamples)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = ebss_reference(adapter, first, allowed, args.seqlen, args.tau, args.width)
    slow_s = time.perf_counter() - start

    same = int((fast.input_ids == slow.input_ids).all(dim=1).sum())
    params = sum(p.numel() for p in model.parameters())
    print("| model | params | dtype | threads | nsamples × seqlen | width | batched KV s | tok/s | naive s | tok/s | ratio | identical |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {adapter.family} {len(adapter.layers)}L×{adapter.num_experts}E | {params / 1e6:.1f}M | {args.dtype} | "
        f"{args.threads} | {args.nsamples} × {args.seqlen} | {args.width} | {fast_s:.2f} | {tokens / fast_s:.0f} | "
        f"{slow_s:.1f} | {tokens / slow_s:.1f} | {slow_s / fast_s:.1f}× | {same}/{args.nsamples} |"
    )


if __name__ == "__main__":
    main()
