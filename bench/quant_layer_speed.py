"""Batched layer-streaming AGQ-GPTQ vs the original code's strategy, on one MoE layer.

The reference follows the original MoEQuant/GPTQ code path: every linear is handled on its
own (experts one by one, gate and up separately), and for each of them every calibration
sample is re-run, one at a time, through the whole decoder layer to collect that linear's
inputs. Both use the same solver and float64 Hessians, so the codes can be compared.
Each variant runs in a fresh process so its peak resident memory is its own.

    python bench/quant_layer_speed.py [--model DEMO_DIR] [--nsamples 32] [--seqlen 256]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

from moequant.models import adapt
from moequant.quant.driver import capture_layer_inputs, stream_quantize
from moequant.quant.gptq import gptq_solve
from moequant.quant.config import QuantConfig
from moequant.quant.hessian import HessianStack
from moequant.quant.registry import configure
from moequant.quant.sequential import GPTQLayer
from moequant.quant.targets import LayerTargets

DEMO_SHAPE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
    num_local_experts=8, num_experts_per_tok=2, vocab_size=4096, max_position_embeddings=512,
)


def one_layer_model(spec: str | None):
    """The demo's first decoder layer alone (or a synthetic model of the demo's shape)."""
    if spec:
        from moequant.loading import load_model

        model = load_model(spec)
        del model.model.layers[1:]
        model.config.num_hidden_layers = 1
        return model
    from moequant.models.synthetic import tiny_model

    return tiny_model("mixtral", seed=0, **DEMO_SHAPE)


def config() -> QuantConfig:
    return configure("agq", wbits=3, hessian_dtype="float64", device="cpu", batch_size=8)


def run_batched(model, calib) -> dict[str, torch.Tensor]:
    result = stream_quantize(model, calib, config(), GPTQLayer(agq=True))
    return {address: w.unpacked().codes for address, w in result.weights.items()}


@torch.no_grad()
def run_reference(model, calib) -> dict[str, torch.Tensor]:
    cfg = config()
    adapter = adapt(model)
    layer = adapter.layers[0]
    inputs, kwargs = capture_layer_inputs(adapter, calib, 1, torch.device("cpu"))
    targets = LayerTargets.of(layer, True)
    mlp, bank = layer.mlp, layer.mlp.experts
    codes: dict[str, torch.Tensor] = {}

    def collect(module, member_input, dim):
        """Re-run the layer per sample; the hook only keeps the input, which is used after the
        forward, since routing it may itself call the hooked block."""
        hessian = HessianStack(1, dim, torch.float64, torch.device("cpu"))
        for hidden, kw in zip(inputs, kwargs):
            seen = []
            handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
            layer.module(hidden, **kw)
            handle.remove()
            member_input(seen[0], hessian)
        return hessian

    def solve(weight, hessian):
        result = gptq_solve(weight[None], hessian.H, cfg.grid, cfg.options.damp, cfg.options.blocksize,
                            cfg.options.act_order, hessian.tokens < cfg.run.min_tokens)
        weight.copy_(result.weight.dequantize()[0].to(weight.dtype))
        return result.weight.codes[0]

    for group in targets.attention():
        for target in group:
            linear = layer.module.get_submodule(target.module)
            hessian = collect(linear, lambda x, h: h.add(0, x), linear.in_features)
            codes[target.address] = solve(linear.weight.data, hessian)[None]
    router = mlp.router.linear_weight.data
    hessian = collect(mlp.module, lambda x, h: h.add(0, x), router.shape[1])
    codes[f"layers.{layer.index}.router"] = solve(router, hessian)[None]

    def expert_input(expert, down):
        def add(x, hessian):
            x = x.reshape(-1, x.shape[-1])
            ids, coeffs = mlp.router.route(x)
            token, slot = torch.where(ids == expert)
            xe = x[token]
            if down:
                xe = bank.act_fn(xe @ bank.weight("gate", expert).t()) * (xe @ bank.weight("up", expert).t())
            hessian.add(0, xe, coeffs[token, slot].float())

        return add

    for projections, down in ((("gate", "up"), False), (("down",), True)):
        for expert in range(bank.num_experts):
            for proj in projections:
                weight = bank.weight(proj, expert)
                hessian = collect(mlp.module, expert_input(expert, down), weight.shape[1])
                codes.setdefault(f"layers.{layer.index}.experts.{proj}", [None] * bank.num_experts)[expert] = solve(weight, hessian)
    return {a: torch.stack(c) if isinstance(c, list) else c for a, c in codes.items()}


def _child(name, spec, nsamples, seqlen, queue):
    torch.set_num_threads(1)
    model = one_layer_model(spec)
    calib = torch.randint(3, model.config.vocab_size, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    codes = (run_batched if name == "batched" else run_reference)(model, calib)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((name, seconds, peak / 1024, (peak - before) / 1024, {a: c.numpy() for a, c in codes.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="demo model directory (default: synthetic model of the demo's shape)")
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    for name in ("batched", "reference"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, args.model, args.nsamples, args.seqlen, queue))
        proc.start()
        got = queue.get()
        proc.join()
        results[name] = got
    same = total = 0
    for address, codes in results["batched"][4].items():
        same += int((codes == results["reference"][4][address]).sum())
        total += codes.size
    print(f"one MoE layer ({args.model or 'synthetic, demo shape'}), AGQ-GPTQ W3, {args.nsamples}×{args.seqlen} tokens, 1 thread")
    print(f"{'variant':<10} {'seconds':>9} {'peak RSS MiB':>13} {'RSS growth MiB':>15}")
    for name, seconds, peak, growth, _ in results.values():
        print(f"{name:<10} {seconds:>9.2f} {peak:>13.0f} {growth:>15.1f}")
    print(f"speed-up: {results['reference'][1] / results['batched'][1]:.1f}×; identical codes: {same}/{total} ({same / total:.4%})")


if __name__ == "__main__":
    main()
