"""How much round-to-nearest weight quantization hurts a built demo model.

The demo exists to make quantization methods distinguishable, so the check is direct:
per-output-channel symmetric RTN of every decoder-layer linear (attention, dense and
shared MLPs, each routed expert's gate/up/down; routers, embeddings and lm_head stay
float) and held-out perplexity per domain before and after. W3 should cost a few percent
of mixed perplexity, W4 clearly less.

    python bench/demo_sensitivity.py DEMO_DIR [--bits 4 3] [--clip] [--json OUT]

Plain RTN uses the absmax range (what notes/environment.md measured); `--clip` adds rows
with the quantizer's per-row clip search, which is what `moequant quantize --algo rtn`
does by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from moequant.demo import DOMAINS, MIXED, SUMMARY, evaluate_texts
from moequant.quant.registry import configure
from moequant.quant.rtn import quantize_rtn

NAMES = (*DOMAINS, MIXED)


def perplexities(model: torch.nn.Module, tokenizer: Any, texts: dict[str, str], seq_len: int) -> dict[str, float]:
    return {name: result.ppl for name, result in evaluate_texts(model, tokenizer, texts, seq_len).items()}


def quantized(directory: Path, bits: int, clip: bool) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    quantize_rtn(model, None, configure("rtn", wbits=bits, clip=clip, quantize_router=False, device="cpu"))
    return model


def table(rows: dict[str, dict[str, float]]) -> str:
    labels = list(rows)
    head = "| domain | " + " | ".join(label if label == "fp" else f"{label} | Δ" for label in labels) + " |"
    rule = "|---" * (1 + 2 * len(labels) - 1) + "|"
    lines = [head, rule]
    for name in NAMES:
        fp = rows["fp"][name]
        cells = [f"{fp:.3f}"]
        for label in labels[1:]:
            value = rows[label][name]
            cells += [f"{value:.3f}", f"{100 * (value / fp - 1):+.2f}%"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path, help="a directory written by `moequant build-demo`")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 3])
    parser.add_argument("--clip", action="store_true", help="also RTN with the quantizer's clip search")
    parser.add_argument("--split", default="test", choices=("validation", "test"))
    parser.add_argument("--json", type=Path, help="write the perplexities here too")
    args = parser.parse_args(argv)

    summary = json.loads((args.demo / SUMMARY).read_text())
    seq_len = summary["heldout_seq_len"]
    texts = {name: (args.demo / "data" / name / f"{args.split}.txt").read_text(encoding="utf-8") for name in NAMES}
    tokenizer = AutoTokenizer.from_pretrained(args.demo)

    started = time.perf_counter()
    rows = {"fp": perplexities(AutoModelForCausalLM.from_pretrained(args.demo).eval(), tokenizer, texts, seq_len)}
    for bits in args.bits:
        for clip in (False, True) if args.clip else (False,):
            label = f"W{bits}" + (" clip" if clip else "")
            rows[label] = perplexities(quantized(args.demo, bits, clip), tokenizer, texts, seq_len)

    print(
        f"{summary['family']} demo, {summary['parameters'] / 1e6:.2f}M parameters, {summary['steps']} steps, "
        f"seed {summary['seed']}; {args.split} split, windows of {seq_len} tokens "
        f"({time.perf_counter() - started:.0f} s)"
    )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
