"""FLOP counts that define the compute floor, from the adapter's weights and the run's sizes.

The floor counts only the matrix work the method cannot avoid, at the matmul rate measured
in the same run:
- forwards: ONE forward of the layer per calibration token (sequential quantization needs
  every linear's output exactly once, with its already-quantized weights): 2·(dense
  weights + top_k · one expert's weights) per token, plus causal attention 4·pairs·d_v;
- Hessians: 2·T·d² for every accumulated token of every Hessian the algorithm builds
  (counted as it runs, so AGQ's per-expert token counts are exact);
- solves: per member 4/3·n³ (Cholesky, inverse, Cholesky of the inverse) plus GPTQ's
  error propagation rows·n² (lazy block updates) + rows·n·blocksize (in-block columns).
Elementwise work (clip search, rounding) and memory traffic are not in the floor, which
is why measured/floor can never reach 1; `step_weight_bytes` gives EBSS's memory floor,
the bound of a decoding step that reads every weight once.
"""

from __future__ import annotations

import torch

from moequant.models import PROJECTIONS, DecoderLayer, ModelAdapter, MoEBlock


def _dense_weight_elements(layer: DecoderLayer) -> int:
    """Weights every token of the layer multiplies with: attention, router, shared experts, dense MLP."""
    mlp = layer.mlp
    bank_ids = {id(p) for p in mlp.experts.parameters()} if isinstance(mlp, MoEBlock) else set()
    seen: set[int] = set()
    total = 0
    for linear in layer.named_linears().values():
        if id(linear.weight) in bank_ids or id(linear.weight) in seen:
            continue
        seen.add(id(linear.weight))
        total += linear.weight.numel()
    if isinstance(mlp, MoEBlock) and id(mlp.router.linear_weight) not in seen:
        total += mlp.router.linear_weight.numel()
    return total


def expert_weight_elements(layer: DecoderLayer) -> int:
    """Weights of one routed expert (all projections)."""
    mlp = layer.mlp
    if not isinstance(mlp, MoEBlock):
        return 0
    return sum(mlp.experts.weight(proj, 0).numel() for proj in PROJECTIONS)


def attention_width(layer: DecoderLayer) -> int:
    """Σ heads·head_dim read by the attention writers: the width of both QKᵀ and PV."""
    return sum(linear.in_features for linear in layer.attention.writers.values())


def layer_forward_flops(layer: DecoderLayer, sequences: int, seqlen: int) -> float:
    """One forward of `sequences` causal sequences of `seqlen` tokens through the layer."""
    tokens = sequences * seqlen
    top_k = layer.mlp.top_k if isinstance(layer.mlp, MoEBlock) else 0
    per_token = 2.0 * (_dense_weight_elements(layer) + top_k * expert_weight_elements(layer))
    pairs = sequences * seqlen * (seqlen + 1) / 2
    return tokens * per_token + 4.0 * pairs * attention_width(layer)


def step_weight_bytes(layer: DecoderLayer, rows: int, itemsize: int) -> float:
    """Weight bytes one decoding step of `rows` rows reads in the layer: every dense weight,
    and each routed expert that at least one row picks (expected count under uniform routing)."""
    mlp = layer.mlp
    experts = 0.0
    if isinstance(mlp, MoEBlock):
        count, top_k = mlp.experts.num_experts, mlp.top_k
        experts = count * (1.0 - (1.0 - top_k / count) ** rows)
    return itemsize * (_dense_weight_elements(layer) + experts * expert_weight_elements(layer))


def head_flops(adapter: ModelAdapter, tokens: int) -> float:
    return 2.0 * tokens * adapter.lm_head.weight.numel()


def hessian_add_flops(tokens: int, dim: int) -> float:
    return 2.0 * tokens * dim * dim


def solve_flops(members: int, rows: int, cols: int, blocksize: int) -> float:
    return members * (4.0 / 3.0 * cols**3 + rows * cols**2 + rows * cols * min(blocksize, cols))


def parameter_bytes(model: torch.nn.Module, itemsize: int | None = None) -> int:
    """Bytes of all parameters, at `itemsize` bytes each when given (2 = the fp16 model)."""
    return sum(p.numel() * (itemsize or p.element_size()) for p in model.parameters())
