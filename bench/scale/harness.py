"""The measured phases of MoEQuant++ on one built model: rotation, AGQ-GPTQ, EBSS, perplexity.

Quantization runs the package's own layer-streaming driver and AGQ stage code unchanged;
the harness only wraps `HessianStack.add`/`add_grouped` and the solver entry point for the duration of
the run, to time and count what they do per layer, so the split is the real code's split.
Forwards are what remains of each layer's time (stage forwards, routing, recomputed
expert activations for the down Hessians, the final output pass and the layer's moves).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import moequant.quant.gptq as gptq
import moequant.quant.sequential as sequential
from bench.scale.flops import head_flops, hessian_add_flops, layer_forward_flops, solve_flops, step_weight_bytes
from bench.scale.measure import LayerClock, PeakHostMemory, now, peak_gpu_memory, rss_bytes, sync
from moequant.calib.ebss import ebss_generate, first_tokens
from moequant.calib.vocab import allowed_token_mask
from moequant.eval.perplexity import evaluate_windows
from moequant.models import ModelAdapter
from moequant.quant.config import QuantConfig
from moequant.quant.driver import LayerContext, activation_width, capture_layer_inputs, stream_quantize
from moequant.quant.gptq import auto_chunk, gptq_solve
from moequant.quant.grid import clip_shrinks, fit_grid
from moequant.quant.hessian import HessianStack, MemberGroups
from moequant.quant.sequential import GPTQLayer
from moequant.rotation.rotate import rotate_model


@dataclass
class LayerCost:
    """What one decoder layer's quantization spent, and the work it did."""

    index: int
    moe: bool
    seconds: float = 0.0
    hessian_s: float = 0.0
    solve_s: float = 0.0
    grid_s: float = 0.0
    grid_pows: int = 0
    hessian_flops: float = 0.0
    solve_flops: float = 0.0
    forward_flops: float = 0.0
    hessian_bytes: int = 0
    solver_bytes: int = 0
    stacks: set[int] = field(default_factory=set, repr=False)

    @property
    def forward_s(self) -> float:
        return max(0.0, self.seconds - self.hessian_s - self.solve_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "moe": self.moe, "seconds": self.seconds, "hessian_s": self.hessian_s,
            "solve_s": self.solve_s, "grid_s": self.grid_s, "grid_pows": self.grid_pows, "forward_s": self.forward_s, "hessian_flops": self.hessian_flops,
            "solve_flops": self.solve_flops, "forward_flops": self.forward_flops,
            "hessian_bytes": self.hessian_bytes, "solver_bytes": self.solver_bytes,
        }


@contextmanager
def instrumented(costs: dict[int, LayerCost], current: list[int], device: torch.device, blocksize: int) -> Iterator[None]:
    """Time and count every Hessian accumulation and every solve, charged to the current layer.

    The grid fit (with its clip search) runs inside the solver; it is timed on its own as
    well, because it is elementwise work the FLOP floor does not count, and the |w − q|^norm
    evaluations it makes (weights × shrink factors) are counted for its own floor.
    """
    original_add, original_add_grouped = HessianStack.add, HessianStack.add_grouped

    def timed(self: HessianStack, tokens: int, dim: int, accumulate: Any) -> None:
        cost = costs[current[0]]
        if id(self) not in cost.stacks:
            cost.stacks.add(id(self))
            cost.hessian_bytes += self.H.numel() * self.H.element_size()
        sync(device)
        start = now()
        accumulate()
        sync(device)
        cost.hessian_s += now() - start
        cost.hessian_flops += hessian_add_flops(tokens, dim)

    def add(self: HessianStack, member: int, x: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        timed(self, x.numel() // x.shape[-1], x.shape[-1], lambda: original_add(self, member, x, *args, **kwargs))

    def add_grouped(self: HessianStack, x: torch.Tensor, groups: MemberGroups, *args: Any, **kwargs: Any) -> None:
        """Counted per routed pair: member m accumulates x[groups.token] over its slice."""
        timed(self, sum(groups.sizes), x.shape[-1], lambda: original_add_grouped(self, x, groups, *args, **kwargs))

    def solve(W: torch.Tensor, H: torch.Tensor, *args: Any, **kwargs: Any):
        cost = costs[current[0]]
        members, rows, cols = W.shape
        starved = kwargs.get("starved")
        solved = members - (int(starved.sum()) if starved is not None else 0)
        chunk = kwargs.get("chunk") or auto_chunk(rows, cols, H.element_size())
        working = min(chunk, members) * (4 * cols * cols + 7 * rows * cols) * H.element_size()
        cost.solver_bytes = max(cost.solver_bytes, working + W.numel() * H.element_size())
        sync(device)
        start = now()
        result = gptq_solve(W, H, *args, **kwargs)
        sync(device)
        cost.solve_s += now() - start
        cost.solve_flops += solve_flops(solved, rows, cols, blocksize)
        return result

    def fit(w: torch.Tensor, spec: Any) -> tuple[torch.Tensor, torch.Tensor]:
        sync(device)
        start = now()
        fitted = fit_grid(w, spec)
        sync(device)
        costs[current[0]].grid_s += now() - start
        if spec.clip:
            costs[current[0]].grid_pows += w.numel() * len(clip_shrinks(spec))
        return fitted

    HessianStack.add = add  # type: ignore[method-assign]
    HessianStack.add_grouped = add_grouped  # type: ignore[method-assign]
    sequential.gptq_solve = solve  # type: ignore[assignment]
    gptq.fit_grid = fit  # type: ignore[assignment]
    try:
        yield
    finally:
        HessianStack.add = original_add  # type: ignore[method-assign]
        HessianStack.add_grouped = original_add_grouped  # type: ignore[method-assign]
        sequential.gptq_solve = gptq_solve
        gptq.fit_grid = fit_grid


def quantize_phase(model: nn.Module, adapter: ModelAdapter, calib: torch.Tensor, config: QuantConfig, device: torch.device) -> dict[str, Any]:
    """AGQ-GPTQ of the whole built model through `stream_quantize`, timed per layer and per part."""
    sequences, seqlen = calib.shape
    costs = {layer.index: LayerCost(layer.index, layer.is_moe, forward_flops=layer_forward_flops(layer, sequences, seqlen))
             for layer in adapter.layers}
    current = [adapter.layers[0].index]
    starts: list[float] = []
    algorithm = GPTQLayer(agq=True)

    def quantize_layer(ctx: LayerContext) -> None:
        sync(device)
        starts.append(now())
        current[0] = ctx.layer.index
        algorithm(ctx)

    gc.collect()
    rss_start = rss_bytes()
    with PeakHostMemory() as host, peak_gpu_memory(device) as gpu:
        with instrumented(costs, current, device, config.options.blocksize):
            sync(device)
            begin = now()
            result = stream_quantize(model, calib, config, quantize_layer)
            sync(device)
            end = now()
    gc.collect()
    rss_end = rss_bytes()
    held = sum(t.nbytes for w in result.weights.values() for t in (w.codes, w.scale, w.zero))
    quantized = sum(math.prod(w.shape) for w in result.weights.values())
    del result
    bounds = [*starts, end]
    for layer, start, stop in zip(adapter.layers, bounds, bounds[1:]):
        costs[layer.index].seconds = stop - start
    return {
        "seconds": end - begin,
        "capture_s": starts[0] - begin,
        "layers": [costs[layer.index].as_dict() for layer in adapter.layers],
        "tokens": sequences * seqlen,
        "peak_host_bytes": host.peak,
        "peak_host_method": host.method,
        "rss_start_bytes": rss_start,
        "rss_end_bytes": rss_end,
        "held_result_bytes": held,
        "quantized_weights": quantized,
        "peak_gpu_bytes": gpu["peak"],
    }


def activation_bytes(adapter: ModelAdapter, tokens: int, itemsize: int) -> int:
    """The layer's calibration activations at their peak, as `moequant quantize` plans them: inputs,
    outputs, the MoE-block input, the replayed token-mixer output and the replayed readers' outputs."""
    return activation_width(adapter) * tokens * itemsize


def synthetic_allowed(model: nn.Module) -> torch.Tensor:
    """Every id but the configured special ones: the synthetic model has no tokenizer."""
    config = model.config
    banned = {getattr(config, key, None) for key in ("pad_token_id", "bos_token_id", "eos_token_id")}
    return allowed_token_mask(config.vocab_size, {int(i) for i in banned if isinstance(i, int)})


@torch.no_grad()
def ebss_phase(model: nn.Module, adapter: ModelAdapter, nsamples: int, seqlen: int, width: int, tau: float,
               batch_size: int, device: torch.device) -> dict[str, Any]:
    allowed = synthetic_allowed(model)
    first = first_tokens(allowed, nsamples, seed=0)
    with PeakHostMemory() as host, peak_gpu_memory(device) as gpu:
        with LayerClock([layer.module for layer in adapter.layers], device) as clock:
            sync(device)
            start = now()
            ebss_generate(adapter, first, allowed, seqlen, tau, width, batch_size=batch_size)
            sync(device)
            seconds = now() - start
    rows = nsamples * width
    step_rows = min(batch_size, nsamples) * width
    itemsize = adapter.lm_head.weight.element_size()
    return {
        "seconds": seconds,
        "layer_seconds": clock.seconds(),
        "tokens": nsamples * seqlen,
        "rows": rows,
        "layer_flops": [layer_forward_flops(layer, rows, seqlen) for layer in adapter.layers],
        "head_flops": head_flops(adapter, rows * seqlen),
        "steps": math.ceil(nsamples / batch_size) * seqlen,
        "step_rows": step_rows,
        "layer_step_bytes": [step_weight_bytes(layer, step_rows, itemsize) for layer in adapter.layers],
        "head_step_bytes": adapter.lm_head.weight.numel() * itemsize,
        "peak_host_bytes": host.peak,
        "peak_gpu_bytes": gpu["peak"],
    }


@torch.no_grad()
def perplexity_phase(model: nn.Module, adapter: ModelAdapter, windows: torch.Tensor, batch_size: int,
                     device: torch.device) -> dict[str, Any]:
    sequences, seqlen = windows.shape
    with PeakHostMemory() as host, peak_gpu_memory(device) as gpu:
        with LayerClock([layer.module for layer in adapter.layers], device) as clock:
            sync(device)
            start = now()
            result = evaluate_windows(model, windows, batch_size=batch_size, progress=False)
            sync(device)
            seconds = now() - start
    return {
        "seconds": seconds,
        "layer_seconds": clock.seconds(),
        "tokens": sequences * seqlen,
        "ppl": result.ppl,
        "layer_flops": [layer_forward_flops(layer, sequences, seqlen) for layer in adapter.layers],
        "head_flops": head_flops(adapter, sequences * seqlen),
        "peak_host_bytes": host.peak,
        "peak_gpu_bytes": gpu["peak"],
    }


@torch.no_grad()
def rotation_phase(model: nn.Module) -> dict[str, Any]:
    """Norm fusion and the residual rotation where the model lives, as `moequant rotate` does it."""
    start = now()
    with PeakHostMemory() as host:
        rotate_model(model)
    return {"seconds": now() - start, "peak_host_bytes": host.peak}


@torch.no_grad()
def hessian_precision_check(adapter: ModelAdapter, calib: torch.Tensor, config: QuantConfig, device: torch.device) -> dict[str, Any]:
    """Does the run's Hessian dtype (and TF32 setting) change GPTQ's outcome against float64?

    H of the first attention reader is built from real layer-0 inputs in the configured dtype
    and in float64; both are solved with the same weight, and the results are compared on
    the float64 proxy loss tr(ΔW·H·ΔWᵀ) and on how many integer codes agree.
    """
    inputs, _ = capture_layer_inputs(adapter, calib[: config.run.batch_size], config.run.batch_size, device)
    layer = adapter.layers[0]
    x = layer.input_norm(inputs[0]).reshape(-1, inputs[0].shape[-1])
    weight = next(iter(layer.attention.readers.values())).weight.detach().to(device)[None]
    outcomes = {}
    for name, dtype in (("run", torch.float64 if config.run.hessian_dtype == "float64" else torch.float32),
                        ("float64", torch.float64)):
        stack = HessianStack(1, x.shape[-1], dtype, device)
        stack.add(0, x)
        solved = gptq_solve(weight, stack.H, config.grid, config.options.damp, config.options.blocksize, config.options.act_order)
        outcomes[name] = (stack.H.double(), solved.weight)
    H64 = outcomes["float64"][0]
    w64 = weight.double()

    def proxy(q: Any) -> float:
        delta = (q.dequantize(torch.float64) - w64)[0]
        return float(torch.einsum("ri,ij,rj->", delta, H64[0], delta))

    run_loss, ref_loss = proxy(outcomes["run"][1]), proxy(outcomes["float64"][1])
    codes_run, codes_ref = outcomes["run"][1].codes, outcomes["float64"][1].codes
    return {
        "hessian_dtype": config.run.hessian_dtype,
        "tf32": bool(device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32),
        "hessian_rel_error": float((outcomes["run"][0] - H64).norm() / H64.norm()),
        "proxy_loss_rel_change": (run_loss - ref_loss) / ref_loss,
        "codes_identical": float((codes_run == codes_ref).float().mean()),
        "tokens": int(x.shape[0]),
    }
