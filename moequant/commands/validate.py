"""`moequant validate DIR`: is a quantized checkpoint complete, and does stock transformers load it?"""

from __future__ import annotations

import argparse

NAME = "validate"
HELP = "check a pack-quantized checkpoint: every linear and expert quantized, codes, scales, names, stock loading"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory (moequant quantize --out, or any pack-quantized model)")
    parser.add_argument("--trust-remote-code", action="store_true", default=None,
                        help="allow the model's own Python code (default: what quantization.json records)")
    parser.add_argument("--no-load", dest="load", action="store_false",
                        help="skip loading the whole model with stock transformers")


def run(args: argparse.Namespace) -> int:
    from moequant.quant.validate import validate_checkpoint

    coverage = validate_checkpoint(args.checkpoint, trust_remote_code=args.trust_remote_code, load=args.load)
    print(f"{args.checkpoint}: valid — {coverage.summary()}")
    return 0
