"""From one shape's measurements to the full model: floors, projections, targets, tables.

Projection rule (every phase): the built model has the embedding, the head and L_b decoder
layers whose last one is a MoE layer; the full model has L_f layers, every extra one like
the last built layer, so

    T_full = T_outside + Σ_{built layers} t_i + (L_f − L_b) · t_last

where T_outside is the time not spent inside a decoder layer (quantization: capturing the
layer-0 inputs; EBSS and perplexity: embedding, head, log-softmax, search bookkeeping).
Floors follow the same rule with each layer's floor, and rotation, whose cost is linear in
the weights it transforms, scales by the parameter count: T_rot · P_full / P_built.
"""

from __future__ import annotations

from typing import Any

CALIB_TARGET = (128, 512)
TIME_TARGET_S = 300.0
FLOOR_RATIO_TARGET = 3.0
HOST_FACTOR = 1.3


def extrapolate(per_layer: list[float], full_layers: int) -> float:
    return sum(per_layer) + (full_layers - len(per_layer)) * per_layer[-1]


def layer_floor(layer: dict[str, Any], rates: dict[str, float]) -> float:
    return (layer["hessian_flops"] + layer["solve_flops"]) / rates["hessian"] + layer["forward_flops"] / rates["model"]


def clip_floor(layer: dict[str, Any], rates: dict[str, float]) -> str:
    """'; F' with F the seconds the layer's clip-search powers take at the measured pow rate."""
    if "pow" not in rates or "grid_pows" not in layer:
        return ""
    return f"; {layer['grid_pows'] / rates['pow']:.2f}"


def project(result: dict[str, Any]) -> dict[str, Any]:
    """Full-model figures of one shape's measurements (see the module docstring for the rule)."""
    full, rates = result["full_layers"], result["rates"]
    out: dict[str, Any] = {"full_layers": full, "built_layers": len(result["layer_params"])}
    params_full = result["outside_params"] + extrapolate([float(p) for p in result["layer_params"]], full)
    out["params_full"] = params_full
    out["fp16_bytes_full"] = 2 * params_full
    quant = result.get("quant")
    if quant:
        layers = quant["layers"]
        out["quant_s"] = quant["capture_s"] + extrapolate([layer["seconds"] for layer in layers], full)
        out["quant_floor_s"] = extrapolate([layer_floor(layer, rates) for layer in layers], full)
        out["quant_ratio"] = out["quant_s"] / out["quant_floor_s"]
    rotation = result.get("rotation")
    if rotation:
        out["rotation_s"] = rotation["seconds"] * params_full / result["params_built"]
    if quant and rotation:
        out["moequant_pp_s"] = out["rotation_s"] + out["quant_s"]
    for phase in ("ebss", "ppl"):
        measured = result.get(phase)
        if not measured:
            continue
        outside = measured["seconds"] - sum(measured["layer_seconds"])
        seconds = outside + extrapolate(measured["layer_seconds"], full)
        flops = measured["head_flops"] + extrapolate(measured["layer_flops"], full)
        out[f"{phase}_s"] = seconds
        out[f"{phase}_tok_s"] = measured["tokens"] / seconds
        out[f"{phase}_floor_s"] = flops / rates["model"]
        out[f"{phase}_ratio"] = seconds / out[f"{phase}_floor_s"]
    ebss = result.get("ebss")
    if ebss:
        out["ebss_target_s"] = out["ebss_s"] * (CALIB_TARGET[0] * CALIB_TARGET[1]) / ebss["tokens"]
        if "read_bandwidth" in rates and "steps" in ebss:
            step_bytes = ebss["head_step_bytes"] + extrapolate(ebss["layer_step_bytes"], full)
            out["ebss_memory_floor_s"] = ebss["steps"] * step_bytes / rates["read_bandwidth"]
            out["ebss_memory_ratio"] = out["ebss_s"] / out["ebss_memory_floor_s"]
    return out


def host_check(result: dict[str, Any], projection: dict[str, Any]) -> dict[str, Any] | None:
    """Projected peak host memory of quantizing the full model, against 1.3 × its fp16 size.

    Measured on the built model (RSS, after the family's code was imported):
    held = the codes and scales the run keeps for every quantized weight (they grow with the
    model), overhead = what the process holds beyond the model's parameters when
    quantization starts, transient = the peak above what is held at the end (one layer's
    working set: it does not grow with the model). The full model then needs

        fp16_full + held · P_layers_full / P_layers_built + overhead   (+ transient)

    and the target allows 1.3 · fp16_full (+ one layer's working set), so the check is the
    ratio of the first to 1.3 · fp16_full; transient is reported beside the analytic working
    set (activations + Hessians + solver chunk) it should match.
    """
    quant = result.get("quant")
    if not quant:
        return None
    layer_params = [float(p) for p in result["layer_params"]]
    growth = extrapolate(layer_params, result["full_layers"]) / sum(layer_params)
    held_full = quant["held_result_bytes"] * growth
    overhead = max(0, quant["rss_start_bytes"] - result["baseline_rss_bytes"] - result["model_bytes"])
    fp16_full = projection["fp16_bytes_full"]
    needed = fp16_full + held_full + overhead
    working = result["activation_bytes"] + max(layer["hessian_bytes"] + layer["solver_bytes"] for layer in quant["layers"])
    return {"fp16_full_bytes": fp16_full, "held_full_bytes": held_full, "overhead_bytes": overhead,
            "needed_bytes": needed, "ratio": needed / (HOST_FACTOR * fp16_full),
            "transient_bytes": max(0, quant["peak_host_bytes"] - quant["rss_end_bytes"]),
            "working_set_estimate_bytes": working, "method": quant["peak_host_method"]}


def targets(result: dict[str, Any], projection: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, value, verdict) rows; time targets only bind on full shapes at 128×512 on CUDA."""
    binding = (result["scale"] == 1 and result["device"] == "cuda"
               and tuple(result["calib"]) == CALIB_TARGET and tuple(result["ebss_size"]) == CALIB_TARGET)
    rows = []

    def verdict(ok: bool, binds: bool = True) -> str:
        state = "PASS" if ok else "FAIL"
        return state if binds else f"{state} (indicative: not the full shape at 128×512 on CUDA)"

    if "moequant_pp_s" in projection:
        value = projection["moequant_pp_s"]
        rows.append((f"MoEQuant++ W4 full model ≤ {TIME_TARGET_S:.0f} s", f"{value:.1f} s", verdict(value <= TIME_TARGET_S, binding)))
    if "quant_ratio" in projection:
        value = projection["quant_ratio"]
        rows.append((f"AGQ-GPTQ measured/floor ≤ {FLOOR_RATIO_TARGET:.0f}", f"{value:.2f}", verdict(value <= FLOOR_RATIO_TARGET, binding)))
    if "ebss_target_s" in projection:
        value = projection["ebss_target_s"]
        rows.append((f"EBSS 128×512 full model ≤ {TIME_TARGET_S:.0f} s", f"{value:.1f} s", verdict(value <= TIME_TARGET_S, binding)))
    host = host_check(result, projection)
    if host:
        gib = 2**30
        rows.append((f"full-model quantization host peak ≤ {HOST_FACTOR}× fp16 model + layer working set",
                     f"fp16 {host['fp16_full_bytes'] / gib:.1f} + held codes {host['held_full_bytes'] / gib:.1f} + overhead "
                     f"{host['overhead_bytes'] / gib:.2f} GiB = {HOST_FACTOR * host['ratio']:.2f}× fp16; transient "
                     f"{host['transient_bytes'] / 2**20:.0f} MiB (estimate {host['working_set_estimate_bytes'] / 2**20:.0f})",
                     "PASS" if host["ratio"] <= 1 else "FAIL"))
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: list[dict[str, Any]]) -> str:
    """The tables bench/RESULTS.md shows: per-layer split, phases, projections and targets."""
    mib = 2**20
    layer_rows, phase_rows, target_rows = [], [], []
    for result in results:
        name, projection, rates = result["shape"], result["projection"], result["rates"]
        for layer in result.get("quant", {}).get("layers", []):
            floor = layer_floor(layer, rates)
            layer_rows.append([
                name, str(layer["index"]) + (" MoE" if layer["moe"] else " dense"), f"{layer['seconds']:.2f}",
                f"{layer['hessian_s']:.2f}", f"{layer['solve_s']:.2f} ({layer['grid_s']:.2f}{clip_floor(layer, rates)})",
                f"{layer['forward_s']:.2f}",
                f"{layer['hessian_flops'] / 1e9:.1f}", f"{layer['solve_flops'] / 1e9:.1f}", f"{layer['forward_flops'] / 1e9:.1f}",
                f"{floor:.3f}", f"{layer['seconds'] / floor:.1f}×",
            ])
        quant = result.get("quant")
        if quant:
            phase_rows.append([name, "AGQ-GPTQ", f"{quant['tokens']}", f"{quant['seconds']:.2f}", f"{quant['tokens'] / quant['seconds']:.0f}",
                               f"{quant['peak_host_bytes'] / mib:.0f}", f"{quant['peak_gpu_bytes'] / mib:.0f}",
                               f"{projection['quant_s']:.1f}", f"{projection['quant_floor_s']:.1f}", f"{projection['quant_ratio']:.1f}×"])
        for phase, label in (("ebss", "EBSS"), ("ppl", "perplexity")):
            measured = result.get(phase)
            if measured:
                phase_rows.append([name, label, f"{measured['tokens']}", f"{measured['seconds']:.2f}",
                                   f"{measured['tokens'] / measured['seconds']:.0f}", f"{measured['peak_host_bytes'] / mib:.0f}",
                                   f"{measured['peak_gpu_bytes'] / mib:.0f}", f"{projection[phase + '_s']:.1f}",
                                   f"{projection[phase + '_floor_s']:.2f}", f"{projection[phase + '_ratio']:.1f}×"])
        rotation = result.get("rotation")
        if rotation:
            phase_rows.append([name, "rotation (CPU, float64)", "–", f"{rotation['seconds']:.2f}", "–",
                               f"{rotation['peak_host_bytes'] / mib:.0f}", "–", f"{projection['rotation_s']:.1f}", "–", "–"])
        for target, value, state in targets(result, projection):
            target_rows.append([name, target, value, state])
    bound_rows = [
        [result["shape"], str(result["ebss"]["step_rows"]),
         f"{(result['ebss']['head_step_bytes'] + sum(result['ebss']['layer_step_bytes'])) / mib:.1f}",
         f"{result['rates']['read_bandwidth'] / 1e9:.1f}", f"{result['projection']['ebss_s']:.1f}",
         f"{result['projection']['ebss_memory_floor_s']:.2f}", f"{result['projection']['ebss_memory_ratio']:.1f}×",
         f"{result['projection']['ebss_ratio']:.1f}×"]
        for result in results if "ebss_memory_floor_s" in result.get("projection", {})
    ]
    parts = [
        _table(["shape", "layer", "measured s", "Hessian s", "solve s (clip search; its pow floor)", "forward s", "Hessian GFLOP", "solve GFLOP",
                "forward GFLOP", "floor s", "measured/floor"], layer_rows),
        _table(["shape", "phase", "tokens", "measured s", "tok/s", "peak host MiB", "peak GPU MiB", "full model s",
                "full floor s", "measured/floor"], phase_rows),
        _table(["shape", "target", "value", "verdict"], target_rows),
    ]
    repeats = [f"{result['shape']} {phase}: fastest of " + ", ".join(f"{seconds:.2f}" for seconds in result[phase]["repeats"]) + " s"
               for result in results for phase in ("quant", "ebss") if len(result.get(phase, {}).get("repeats", [])) > 1]
    if repeats:
        parts.append("\n".join(repeats))
    if bound_rows:
        parts.insert(2, _table(["shape", "EBSS rows per step", "weight MiB read per step (built)", "read GB/s",
                                "full model s", "full memory floor s", "measured/memory floor", "measured/FLOP floor"],
                               bound_rows))
    return "\n\n".join(parts)
