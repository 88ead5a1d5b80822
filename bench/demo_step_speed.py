"""Seconds per demo training step for several shapes, measured alternately in one run.

The demo build is most of the default workflow's wall time and this box's speed drifts by
tens of percent from hour to hour, so shapes are compared as ratios to a reference shape
timed in the same sitting, round-robin, never as absolute seconds from different runs.
Each measurement is the package's own training loop (`moequant.demo.train.train`) on
random token streams: the cost of a step does not depend on what the tokens say.

    python bench/demo_step_speed.py [--steps 12] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from moequant.demo.corpus import DOMAINS
from moequant.demo.train import DEFAULT_SHAPE, DemoShape, TrainSettings, new_model, train

REFERENCE = dataclasses.replace(DEFAULT_SHAPE, hidden_size=48, intermediate_size=128, vocab_size=4096)
"""The previous default demo: the ratios below are against it."""
CANDIDATES: dict[str, DemoShape] = {
    "48 × 10, experts 128, vocab 4096 (previous default)": REFERENCE,
    "48 × 10, experts 128, vocab 2048": dataclasses.replace(REFERENCE, vocab_size=2048),
    "32 × 10, experts 128, vocab 2048": dataclasses.replace(REFERENCE, hidden_size=32, vocab_size=2048),
    "32 × 10, experts 96, vocab 2048": dataclasses.replace(REFERENCE, hidden_size=32, intermediate_size=96, vocab_size=2048),
}


def seconds_per_step(shape: DemoShape, steps: int) -> float:
    generator = torch.Generator().manual_seed(0)
    streams = {domain: torch.randint(shape.vocab_size, (shape.seq_len * 16,), generator=generator) for domain in DOMAINS}
    model = new_model("mixtral", shape, seed=0)
    train(model, streams, shape, TrainSettings(steps=2), seed=0, progress=False)
    started = time.perf_counter()
    train(model, streams, shape, TrainSettings(steps=steps), seed=0, progress=False)
    return (time.perf_counter() - started) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="round-robin passes over the shapes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the workflow's build uses 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    timings: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for _ in range(args.repeats):
        for name, shape in CANDIDATES.items():
            timings[name].append(seconds_per_step(shape, args.steps))
    reference = statistics.median(timings[next(iter(CANDIDATES))])
    print(f"{args.steps} steps × {args.repeats} passes, {args.threads} threads, batch 8 × 256 tokens")
    print("| shape | parameters | s/step (each pass) | median | vs previous default |")
    print("|---|---|---|---|---|")
    for name, shape in CANDIDATES.items():
        params = sum(p.numel() for p in new_model("mixtral", shape, seed=0).parameters())
        median = statistics.median(timings[name])
        passes = " / ".join(f"{value:.3f}" for value in timings[name])
        print(f"| {name} | {params / 1e6:.2f}M | {passes} | {median:.3f} | {median / reference:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
