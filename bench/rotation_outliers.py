"""Rotation outliers: max|w| / rms(w) of every routed expert linear before and after rotation.

Three states: as loaded, after norm fusion only (the fair "before": fusion alone rescales
input channels), and after the Hadamard rotation.
Also checks that the rotated model computes the same function on held-out text (max relative
logit error, identical top-k routing). Prints a markdown table.

    python bench/rotation_outliers.py --model DIR
    python bench/rotation_outliers.py --demo-steps 300      # builds the demo model first
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from moequant.models import adapt
from moequant.loading import load_model, load_tokenizer
from moequant.models.routing import capture_routing
from moequant.rotation import RotationConfig, expert_outlier_ratios, fuse_norms, rotate_model


def _forward(model: torch.nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    adapter = adapt(model)
    with torch.no_grad(), capture_routing(adapter) as records:
        logits = model(input_ids=input_ids, use_cache=False).logits
    ids = [torch.cat([r[0] for r in records[layer.index]]).sort(dim=-1).values for layer in adapter.moe_layers]
    return logits, ids


def _heldout_ids(model_dir: Path, tokenizer, tokens: int) -> torch.Tensor:
    candidates = [model_dir / "data" / "mixed" / "test.txt", model_dir / "data" / "prose" / "test.txt"]
    text = next((p.read_text() for p in candidates if p.is_file()), None)
    if text is None:
        return torch.randint(3, tokenizer.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    return tokenizer(text, return_tensors="pt").input_ids[:, :tokens]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: build the demo model)")
    parser.add_argument("--demo-steps", type=int, default=300, help="training steps when building the demo")
    parser.add_argument("--seed", type=int, default=0, help="rotation seed")
    parser.add_argument("--tokens", type=int, default=256, help="held-out tokens for the equivalence check")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model_dir = args.model
    if model_dir is None:
        from moequant.demo import build_demo

        model_dir = str(Path(tempfile.mkdtemp(prefix="demo-")) / "model")
        started = time.perf_counter()
        build_demo(model_dir, steps=args.demo_steps)
        print(f"built demo ({args.demo_steps} steps) in {time.perf_counter() - started:.0f} s: {model_dir}")

    model = load_model(model_dir)
    input_ids = _heldout_ids(Path(model_dir), load_tokenizer(model_dir), args.tokens)
    loaded = expert_outlier_ratios(adapt(model))
    logits, routes = _forward(model, input_ids)
    fuse_norms(adapt(model))
    fused = expert_outlier_ratios(adapt(model))
    started = time.perf_counter()
    report = rotate_model(model, RotationConfig(seed=args.seed))
    seconds = time.perf_counter() - started
    after = expert_outlier_ratios(adapt(model))
    rotated_logits, rotated_routes = _forward(model, input_ids)
    error = ((rotated_logits - logits).abs().max() / logits.abs().max()).item()
    same = all(torch.equal(a, b) for a, b in zip(routes, rotated_routes))

    print(f"model {model_dir}: {report['family']}, hidden {report['hidden_size']}, {report['hadamard']}")
    print(f"rotation {seconds:.2f} s; logits max rel err {error:.2e} on {input_ids.shape[1]} tokens")
    print(f"routing identical: {same}")
    print("| projection | mean max/rms: loaded | fused | rotated | max: loaded | fused | rotated |")
    print("|---|---|---|---|---|---|---|")
    for proj in loaded:
        rows = (loaded[proj], fused[proj], after[proj])
        means = " | ".join(f"{r['mean']:.2f}" for r in rows)
        maxes = " | ".join(f"{r['max']:.2f}" for r in rows)
        print(f"| {proj} | {means} | {maxes} |")


if __name__ == "__main__":
    main()
