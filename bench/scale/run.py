"""Measure MoEQuant++ at the paper's model shapes and project to the full models.

    python -m bench.scale.run --shape all --device cuda --out results-h200.json    # real shapes, GPU
    python -m bench.scale.run --shape mixtral-8x7b --device cpu --scale 8          # narrowed, CPU

Defaults follow the device: on CUDA the real shapes (scale 1), bfloat16 weights and the
paper's 128×512 calibration for both AGQ-GPTQ and EBSS; on CPU widths ÷ 8, float32,
one thread and a few thousand tokens, so a run stays within minutes on a shared machine.
"""

from __future__ import annotations

import argparse
import gc
import platform
import shlex
import sys
from typing import Any

import torch

import moequant
from bench.scale.flops import parameter_bytes
from bench.scale.harness import (
    activation_bytes,
    ebss_phase,
    hessian_precision_check,
    perplexity_phase,
    quantize_phase,
    rotation_phase,
)
from bench.scale.measure import matmul_rate, pow_rate, read_bandwidth, rss_bytes, set_clock
from bench.scale.report import host_check, markdown, project
from bench.scale.shapes import build, config_summary, default_layers, full_layers, shape_names
from moequant.artifacts import write_json
from moequant.errors import UsageError
from moequant.models import adapt
from moequant.quant.registry import configure
from moequant.rotation.rotate import rotate_model
from moequant.runtime import resolve_device, resolve_dtype

PHASES = ("rotate", "precision", "quant", "ebss", "ppl")
CUDA_DEFAULTS = dict(scale=1, dtype="bfloat16", nsamples=128, seqlen=512, ebss_nsamples=128, ebss_seqlen=512, ebss_batch=16,
                     ppl_windows=16, ppl_seqlen=2048, ppl_batch=4, rate_size=8192, bandwidth_bytes=1 << 31)
CPU_DEFAULTS = dict(scale=8, dtype="float32", nsamples=32, seqlen=256, ebss_nsamples=32, ebss_seqlen=64, ebss_batch=32,
                    ppl_windows=4, ppl_seqlen=256, ppl_batch=1, rate_size=1024, bandwidth_bytes=1 << 28)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.run", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="all", help=f"one of {', '.join(shape_names())}, or 'all'")
    parser.add_argument("--layers", type=int, help="decoder layers built (default: 1; DeepSeek 2, its layer 0 is dense)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scale", type=int, help="divide every width by this (CUDA default 1, CPU 8)")
    parser.add_argument("--dtype", help="model weights (CUDA default bfloat16, CPU float32)")
    parser.add_argument("--nsamples", type=int, help="AGQ-GPTQ calibration sequences")
    parser.add_argument("--seqlen", type=int, help="AGQ-GPTQ calibration length")
    parser.add_argument("--quant-batch", type=int, default=16, help="calibration sequences per forward")
    parser.add_argument("--wbits", type=int, default=4)
    parser.add_argument("--hessian-dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--expert-chunk", type=int, default=0, help="experts per batched solve (0: the solver's memory budget)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in float32 matmuls on CUDA")
    parser.add_argument("--ebss-nsamples", type=int)
    parser.add_argument("--ebss-seqlen", type=int)
    parser.add_argument("--ebss-width", type=int, default=4)
    parser.add_argument("--ebss-batch", type=int, help="samples per EBSS batch (CUDA default 16, the calibrate verb's; CPU 32: 128 rows per step)")
    parser.add_argument("--tau", type=float, default=1.2)
    parser.add_argument("--ppl-windows", type=int)
    parser.add_argument("--ppl-seqlen", type=int)
    parser.add_argument("--ppl-batch", type=int)
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma list from {', '.join(PHASES)}")
    parser.add_argument("--threads", type=int, help="torch CPU threads (CPU default 1)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the main thread's CPU time (CPU device, one thread), robust to a shared machine")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run quantization (each time on a freshly built model) and EBSS this many times and keep "
                             "the fastest: on a shared machine the slow runs are other jobs' doing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write every measurement as JSON here")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    defaults = CUDA_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.device = device
    args.shapes = shape_names() if args.shape == "all" else (args.shape,)
    unknown = [s for s in args.shapes if s not in shape_names()]
    if unknown:
        raise UsageError(f"unknown shape {unknown[0]!r}; available: {', '.join(shape_names())}, all")
    args.phases = tuple(p for p in args.phases.split(",") if p)
    bad = [p for p in args.phases if p not in PHASES]
    if bad:
        raise UsageError(f"unknown phase {bad[0]!r}; available: {', '.join(PHASES)}")
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {args.repeat}")
    if args.threads is None and device.type == "cpu":
        args.threads = 1
    if args.clock == "cpu" and (device.type != "cpu" or args.threads != 1):
        raise UsageError("--clock cpu needs --device cpu and --threads 1 (all work on the calling thread)")
    return args


@torch.no_grad()
def warm_up(name: str, layers: int, dtype: torch.dtype) -> None:
    """Import the family's modelling code and run one forward on a tiny copy before the baseline,
    so the host-memory baseline holds the libraries and the check counts only the model's own use."""
    tiny = build(name, layers, 64, dtype)
    tiny(input_ids=torch.tensor([[3, 4]]), use_cache=False)
    del tiny
    gc.collect()


def run_shape(name: str, args: argparse.Namespace, rates: dict[str, float]) -> dict[str, Any]:
    device, dtype = args.device, resolve_dtype(args.dtype)
    layers = args.layers or default_layers(name)
    warm_up(name, layers, dtype)
    baseline = rss_bytes()
    model = build(name, layers, args.scale, dtype, args.seed)
    adapter = adapt(model)
    layer_params = [sum(p.numel() for p in layer.module.parameters()) for layer in adapter.layers]
    params = sum(p.numel() for p in model.parameters())
    config = configure("agq", wbits=args.wbits, hessian_dtype=args.hessian_dtype, batch_size=args.quant_batch,
                       expert_chunk=args.expert_chunk, device=str(device))
    generator = torch.Generator().manual_seed(args.seed)
    vocab = model.config.vocab_size
    calib = torch.randint(3, vocab, (args.nsamples, args.seqlen), generator=generator)
    result: dict[str, Any] = {
        "shape": name, "scale": args.scale, "device": device.type, "dtype": args.dtype, "config": config_summary(model),
        "full_layers": full_layers(name), "layer_params": layer_params, "params_built": params,
        "outside_params": params - sum(layer_params), "model_bytes": parameter_bytes(model),
        "baseline_rss_bytes": baseline, "rates": rates, "calib": [args.nsamples, args.seqlen],
        "ebss_size": [args.ebss_nsamples, args.ebss_seqlen], "quant_config": config.to_dict(),
        "activation_bytes": activation_bytes(adapter, calib.numel(), torch.finfo(dtype).bits // 8),
    }
    print(f"[{name}] built {layers} layer(s), {params / 1e6:.1f}M parameters, {args.dtype}", file=sys.stderr, flush=True)
    if "rotate" in args.phases:
        result["rotation"] = rotation_phase(model)
        print(f"[{name}] rotation {result['rotation']['seconds']:.1f} s", file=sys.stderr, flush=True)
    if "precision" in args.phases:
        result["precision"] = hessian_precision_check(adapter, calib, config, device)
    if "quant" in args.phases:
        runs = []
        for attempt in range(args.repeat):
            if attempt:  # quantization edits the model in place: each repeat starts from the built weights
                del model, adapter
                gc.collect()
                model = build(name, layers, args.scale, dtype, args.seed)
                adapter = adapt(model)
                if "rotate" in args.phases:  # the same rotated model the first run quantized
                    with torch.no_grad():
                        rotate_model(model)
            runs.append(quantize_phase(model, adapter, calib, config, device))
            print(f"[{name}] AGQ-GPTQ {runs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
        memory = {key: value for key, value in runs[0].items() if "bytes" in key or key == "peak_host_method"}
        # times from the fastest run; memory from the first, before repeats left freed pages in the process
        result["quant"] = dict(min(runs, key=lambda run: run["seconds"]), **memory, repeats=[run["seconds"] for run in runs])
    if {"ebss", "ppl"} & set(args.phases):
        model.to(device)
    if "ebss" in args.phases:
        runs = []
        for _ in range(args.repeat):
            runs.append(ebss_phase(model, adapter, args.ebss_nsamples, args.ebss_seqlen, args.ebss_width, args.tau,
                                   args.ebss_batch, device))
            print(f"[{name}] EBSS {runs[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
        result["ebss"] = dict(min(runs, key=lambda run: run["seconds"]), repeats=[run["seconds"] for run in runs])
    if "ppl" in args.phases:
        windows = torch.randint(3, vocab, (args.ppl_windows, args.ppl_seqlen), generator=generator)
        result["ppl"] = perplexity_phase(model, adapter, windows, args.ppl_batch, device)
        print(f"[{name}] perplexity {result['ppl']['seconds']:.1f} s", file=sys.stderr, flush=True)
    result["projection"] = project(result)
    result["host_check"] = host_check(result, result["projection"])
    del model, adapter
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def environment(args: argparse.Namespace) -> dict[str, Any]:
    info = {"moequant": moequant.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "machine": platform.machine(), "clock": args.clock}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if args.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(args.device)
        info["tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return info


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    set_clock(args.clock)
    if args.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.cuda.init()
    hessian_dtype = resolve_dtype(args.hessian_dtype)
    rates = {"hessian": matmul_rate(hessian_dtype, args.device, args.rate_size),
             "model": matmul_rate(resolve_dtype(args.dtype), args.device, args.rate_size),
             "read_bandwidth": read_bandwidth(resolve_dtype(args.dtype), args.device, args.bandwidth_bytes),
             "pow": pow_rate(args.device)}
    print(f"matmul rate: {args.hessian_dtype} {rates['hessian'] / 1e12:.3f} TFLOP/s, "
          f"{args.dtype} {rates['model'] / 1e12:.3f} TFLOP/s; read {rates['read_bandwidth'] / 1e9:.1f} GB/s; "
          f"pow {rates['pow'] / 1e9:.2f} G/s",
          file=sys.stderr, flush=True)
    results = []
    for name in args.shapes:
        results.append(run_shape(name, args, rates))
        if args.out:
            write_json(args.out, {"command": shlex.join(["python", "-m", "bench.scale.run", *(argv or sys.argv[1:])]),
                                  "environment": environment(args), "results": results})
    print(markdown(results))
    for result in results:
        precision = result.get("precision")
        if precision:
            print(f"\n{result['shape']}: Hessian {precision['hessian_dtype']}{' (TF32)' if precision['tf32'] else ''} vs float64 "
                  f"on {precision['tokens']} tokens: H rel. error {precision['hessian_rel_error']:.1e}, "
                  f"GPTQ proxy loss change {precision['proxy_loss_rel_change']:+.1e}, codes identical {precision['codes_identical']:.4%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
