"""Expert Hessian accumulation: the per-expert loop, the sorted `add_grouped`, and two batched forms.

One micro-batch of routed tokens (uniform random routing, AGQ coefficients as weights) is
accumulated into E Hessians four ways, each timed round-robin on the main thread's CPU clock:

- `loop`: the former stage code, `torch.where(ids == e)` + gather + `HessianStack.add` per expert;
- `grouped`: one sort (`MemberGroups`) + `HessianStack.add_grouped` (what the stages run);
- `padded bmm`: the sorted rows scattered into a zero-padded [E, most, d] block, one `baddbmm_`;
- `grouped_mm`: `torch._grouped_mm` over the sorted rows with per-expert offsets (float32 only).

Printed per shape: seconds per micro-batch, the ratio to `loop`, and max |ΔH| against `loop`
(0 means bit for bit), at 64 experts top-6 (DeepSeek-MoE, Qwen1.5-MoE) and 8 experts top-2
(Mixtral), widths of the CPU scale run (÷ 8) and its micro-batch of 16 × 256 tokens.

    python bench/hessian_grouping.py [--repeats 5] [--dtype float32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from moequant.quant.hessian import HessianStack, MemberGroups

SHAPES = {
    "64 experts top-6, d=256 (DeepSeek/Qwen ÷ 8, gate/up input)": (64, 6, 256),
    "64 experts top-6, d=176 (DeepSeek ÷ 8, down input)": (64, 6, 176),
    "8 experts top-2, d=512 (Mixtral ÷ 8, gate/up input)": (8, 2, 512),
    "8 experts top-2, d=1792 (Mixtral ÷ 8, down input)": (8, 2, 1792),
}


def variants(x: torch.Tensor, ids: torch.Tensor, coeffs: torch.Tensor, experts: int, dtype: torch.dtype) -> dict[str, Callable[[], torch.Tensor]]:
    def loop() -> torch.Tensor:
        stack = HessianStack(experts, x.shape[-1], dtype, x.device)
        for expert in range(experts):
            token, slot = torch.where(ids == expert)
            c = coeffs[token, slot].float()
            stack.add(expert, x[token], c, c)
        return stack.H

    def grouped() -> torch.Tensor:
        stack = HessianStack(experts, x.shape[-1], dtype, x.device)
        groups = MemberGroups.of(ids, experts)
        c = coeffs[groups.token, groups.slot].float()
        stack.add_grouped(x, groups, c, c)
        return stack.H

    def padded() -> torch.Tensor:
        groups = MemberGroups.of(ids, experts)
        rows = x[groups.token].to(dtype)
        c = coeffs[groups.token, groups.slot].to(dtype)
        sizes = torch.tensor(groups.sizes)
        position = torch.arange(len(rows)) - (sizes.cumsum(0) - sizes)[groups.member]
        block = rows.new_zeros(experts, max(groups.sizes), rows.shape[-1])
        block[groups.member, position] = rows
        weighted = rows.new_zeros(block.shape)
        weighted[groups.member, position] = rows * c[:, None]
        return torch.zeros(experts, rows.shape[-1], rows.shape[-1], dtype=dtype).baddbmm_(weighted.transpose(1, 2), block)

    def grouped_mm() -> torch.Tensor:
        groups = MemberGroups.of(ids, experts)
        rows = x[groups.token].to(dtype)
        c = coeffs[groups.token, groups.slot].to(dtype)
        offsets = torch.tensor(groups.sizes).cumsum(0).to(torch.int32)
        return torch._grouped_mm((rows * c[:, None]).t(), rows, offs=offsets)

    found = {"loop": loop, "grouped": grouped, "padded bmm": padded}
    if dtype == torch.float32:
        found["grouped_mm"] = grouped_mm
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16 * 256, help="tokens per micro-batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    print(f"{args.tokens} tokens per micro-batch, {args.dtype} Hessians, 1 thread, CPU clock, best of {args.repeats}")
    print("| shape | variant | s per micro-batch | vs loop | max abs ΔH vs loop |")
    print("|---|---|---|---|---|")
    for label, (experts, top_k, dim) in SHAPES.items():
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(args.tokens, dim, generator=generator)
        logits = torch.randn(args.tokens, experts, generator=generator)
        coeffs, ids = logits.softmax(-1).topk(top_k, dim=-1)
        runs = variants(x, ids, coeffs, experts, dtype)
        reference = runs["loop"]()
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                start = time.thread_time()
                run()
                best[name] = min(best[name], time.thread_time() - start)
        for name, run in runs.items():
            delta = float((run() - reference).abs().max())
            print(f"| {label} | {name} | {best[name]:.4f} | {best['loop'] / best[name]:.2f}× | {delta:.1e} |")


if __name__ == "__main__":
    main()
