"""How unbalanced the demo's single-domain calibration sets are, against its router balance loss.

EBSS targets inter-expert imbalance: a one-domain calibration set sends most tokens to a
few experts, so the others' Hessians see little data. The relative measure σ·E (σ of the
expert shares over the mean share 1/E) compares models with different expert counts; the
paper's DeepSeek-MoE-16B (E = 64) sits at 2.7 on WikiText2. The demo is trained with a
per-layer Switch balance loss, which evens out routing. This builds the default demo with
several balance-loss coefficients and prints, per build, σ·E of 32 × 256 windows of each
domain's training text (the default config's window sets), the least-used expert's share,
and what the workflow's W3 RTN does to mixed perplexity (the demo must stay sensitive to W3).

    python bench/demo_imbalance.py --aux 0.02 0.005 0 --root /tmp/imbalance
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from moequant.calib.build import build_calibration
from moequant.calib.config import CalibConfig
from moequant.demo import DOMAINS, MIXED, SUMMARY, build_demo, evaluate_texts
from moequant.demo.train import TrainSettings

from moequant.quant.registry import configure
from moequant.quant.rtn import quantize_rtn

WINDOW_SETS = (*DOMAINS, MIXED)


def imbalance(directory: Path, nsamples: int, seqlen: int) -> dict[str, tuple[float, float]]:
    """Window set → (σ·E, the smallest expert share over layers) of its training-text windows."""
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    found = {}
    for name in WINDOW_SETS:
        config = CalibConfig(source=f"text:{directory}/data/{name}/train.txt", nsamples=nsamples, seqlen=seqlen)
        _, summary = build_calibration(model, tokenizer, config)
        experts = len(summary["per_layer_usage"][0])
        smallest = min(min(layer) for layer in summary["per_layer_usage"])
        found[name] = (summary["sigma"] * experts, smallest)
    return found


def w3_cost(directory: Path) -> float:
    """Relative change of mixed held-out perplexity under the workflow's W3 RTN (`moequant quantize --algo rtn`)."""
    seq_len = json.loads((directory / SUMMARY).read_text())["heldout_seq_len"]
    tokenizer = AutoTokenizer.from_pretrained(directory)
    texts = {MIXED: (directory / "data" / MIXED / "test.txt").read_text(encoding="utf-8")}
    fp = evaluate_texts(AutoModelForCausalLM.from_pretrained(directory).eval(), tokenizer, texts, seq_len)[MIXED].ppl
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    quantize_rtn(model, None, configure("rtn", wbits=3, device="cpu"))
    w3 = evaluate_texts(model, tokenizer, texts, seq_len)[MIXED].ppl
    return w3 / fp - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aux", type=float, nargs="+", default=[0.02, 0.005, 0.0], help="balance-loss coefficients")
    parser.add_argument("--root", type=Path, required=True, help="builds go to ROOT/aux-<coef> (reused when present)")
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    args = parser.parse_args(argv)
    header = "| balance loss | " + " | ".join(f"σ·E {n}" for n in WINDOW_SETS)
    header += " | least-used expert share, prose / mixed | W3 RTN Δ mixed ppl | fp mixed ppl | build s |"
    rows = [header, "|---" * (len(WINDOW_SETS) + 5) + "|"]
    for coef in args.aux:
        directory = args.root / f"aux-{coef:g}"
        started = time.perf_counter()
        if not (directory / SUMMARY).is_file():
            build_demo(directory, settings=TrainSettings(aux_loss_coef=coef))
        built = time.perf_counter() - started
        found = imbalance(directory, args.nsamples, args.seqlen)
        fp = math.exp(json.loads((directory / SUMMARY).read_text())["heldout"][MIXED]["nll"])
        cells = [f"{found[n][0]:.2f}" for n in WINDOW_SETS]
        shares = f"{100 * found['prose'][1]:.1f}% / {100 * found[MIXED][1]:.1f}%"
        cells += [shares, f"{100 * w3_cost(directory):+.2f}%", f"{fp:.2f}", f"{built:.0f}"]
        rows.append(f"| {coef:g} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
