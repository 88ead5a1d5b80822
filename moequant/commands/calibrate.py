"""`moequant calibrate`: write a calibration set (EBSS or text windows) with its σ summary."""

from __future__ import annotations

import argparse
import contextlib

import torch

from moequant.calib.build import source_windows, write_calibration_set
from moequant.calib.config import CALIB_DATASETS, CalibConfig
from moequant.errors import require
from moequant.loading import load_model, load_tokenizer
from moequant.models.config import check_seqlen, load_config
from moequant.runtime import DTYPES, resolve_device, resolve_dtype, seed_everything, spread_map

NAME = "calibrate"
HELP = "Generate an EBSS calibration set or sample text windows; writes FILE.jsonl and FILE.summary.json."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CalibConfig()
    parser.add_argument("--model", required=True, help="Hugging Face id, model directory or quantized checkpoint")
    parser.add_argument(
        "--source", default=defaults.source, help=f"ebss, {', '.join(CALIB_DATASETS)}, or text:PATH (.txt or .jsonl)"
    )
    parser.add_argument("--nsamples", type=int, default=defaults.nsamples)
    parser.add_argument("--seqlen", type=int, default=defaults.seqlen)
    parser.add_argument("--tau", type=float, default=defaults.tau, help="EBSS temperature of the balance term")
    parser.add_argument("--width", type=int, default=defaults.width, help="EBSS beam width")
    parser.add_argument(
        "--no-repeat-ngram", type=int, default=defaults.no_repeat_ngram,
        help="EBSS: no sample repeats an n-gram of this length (default 0: the paper's search, no block)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="samples per forward batch")
    parser.add_argument(
        "--enumerate-first-token",
        action="store_true",
        help="EBSS: start sample i with the i-th non-special token id instead of a seeded random one",
    )
    parser.add_argument("--data-path", help="local copy of a hub dataset (directory or .jsonl/.parquet/.txt file)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda[:N], or all (spread over every visible GPU)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model's own Python code")
    parser.add_argument("--no-progress", action="store_true", help="no EBSS progress lines")
    parser.add_argument("--out", required=True, help="output FILE.jsonl (the summary goes to FILE.summary.json)")


def run(args: argparse.Namespace) -> int:
    require(args.out.endswith(".jsonl"), f"--out must name a .jsonl file, got {args.out!r}")
    config = CalibConfig(
        source=args.source,
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        tau=args.tau,
        width=args.width,
        no_repeat_ngram=args.no_repeat_ngram,
        seed=args.seed,
        batch_size=args.batch_size,
        enumerate_first_token=args.enumerate_first_token,
        data_path=args.data_path,
    )
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype)
    seed_everything(config.seed)
    check_seqlen(load_config(args.model, args.trust_remote_code), config.seqlen)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    windows = None if config.is_ebss else source_windows(tokenizer, config)
    model = load_model(
        args.model, dtype=dtype, device=device, trust_remote_code=args.trust_remote_code, device_map=spread_map(args.device)
    )
    if dtype == torch.float64:
        # transformers' default grouped-matmul experts have no float64 kernel; remote-code models have no switch.
        with contextlib.suppress(ValueError, AttributeError):
            model.set_experts_implementation("eager")
    summary = write_calibration_set(
        args.out, model, tokenizer, config, args.model, progress=not args.no_progress, windows=windows
    )
    print(
        f"{args.out}: {config.nsamples} samples × {config.seqlen} tokens, sigma {summary['sigma']:.4f}, "
        f"perplexity {summary['perplexity']:.2f}, {summary['seconds']:.1f} s"
    )
    return 0
