"""Quantized checkpoints: packed integer codes on disk, an ordinary HF model when loaded.

Layout of a checkpoint directory:
- `config.json` (+ tokenizer files): the base model's config, so the loader can rebuild it;
- `quantized.safetensors`: per weight address `A`, `A.codes` (bit-packed), `A.scale`
  (float32) and, for asymmetric grids, `A.zero` (bit-packed);
- `fp_weights.safetensors`: every tensor that stays floating point (embeddings, norms,
  lm_head, biases, unquantized routers); not named `model.safetensors` so no tool mistakes
  the partial state for a complete model;
- `quantization.json`: method, grid, calibration hash, source metadata, package version and
  the shape of every quantized weight; its presence marks the directory as a checkpoint;
- `report.csv`: one row per quantized linear or expert.
Loading dequantizes with the same function the quantizer used, so the loaded model equals
the in-memory quantized one bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import moequant
from moequant.artifacts import atomic_dir, write_json
from moequant.errors import UsageError
from moequant.models import adapt
from moequant.models.loading import QUANTIZED_MARKER
from moequant.quant.grid import QuantizedWeight, pack, symmetric_zero, unpack
from moequant.quant.report import QuantResult, write_report
from moequant.quant.targets import Target, model_targets

FORMAT = "moequant-quantized/1"
QUANTIZED_FILE = "quantized.safetensors"
FP_FILE = "fp_weights.safetensors"
REPORT_FILE = "report.csv"


def _covered_parameters(model: nn.Module, targets: list[Target]) -> set[str]:
    """Names of state tensors whose every element belongs to some quantized weight."""
    spans = [(v.data_ptr(), v.numel()) for t in targets for v in t.views()]
    covered = set()
    for name, tensor in model.state_dict(keep_vars=False).items():
        start, end = tensor.data_ptr(), tensor.data_ptr() + tensor.numel() * tensor.element_size()
        inside = sum(n for ptr, n in spans if start <= ptr < end)
        if inside == tensor.numel():
            covered.add(name)
    return covered


def save_quantized(
    out_dir: str | Path,
    model: nn.Module,
    result: QuantResult,
    metadata: dict[str, Any],
    tokenizer: Any | None = None,
) -> Path:
    """Write the checkpoint atomically; `metadata` (method config, calibration, source) goes into quantization.json."""
    adapter = adapt(model)
    targets = model_targets(adapter, quantize_router=True)
    quantized = [targets[address] for address in result.weights]
    covered = _covered_parameters(model, quantized)
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, Any] = {}
    for address, weight in result.weights.items():
        tensors[f"{address}.codes"] = weight.codes
        tensors[f"{address}.scale"] = weight.scale.contiguous()
        if not weight.sym:
            tensors[f"{address}.zero"] = pack(weight.zero.to(torch.uint8), weight.bits)
        shapes[address] = {
            "shape": list(weight.shape),
            "groups": weight.scale.shape[-1],
            "bits": weight.bits,
            "sym": weight.sym,
        }
    fp_state, tied, seen = {}, {}, {}
    for name, tensor in model.state_dict().items():
        if name in covered:
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        fp_state[name] = tensor.detach().cpu().contiguous()
    payload = {
        "format": FORMAT,
        "moequant_version": moequant.__version__,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "trust_remote_code": bool(getattr(model.config, "auto_map", None)),
        **metadata,
        "tied": tied,
        "summary": result.summary(),
        "weights": shapes,
    }
    with atomic_dir(out_dir) as tmp:
        model.config.save_pretrained(tmp)
        if getattr(model.config, "auto_map", None):
            from transformers.dynamic_module_utils import custom_object_save

            custom_object_save(model, tmp, config=model.config)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        save_file(tensors, str(tmp / QUANTIZED_FILE))
        save_file(fp_state, str(tmp / FP_FILE))
        write_report(tmp / REPORT_FILE, result.rows)
        write_json(tmp / QUANTIZED_MARKER, payload)
    return Path(out_dir)


def read_metadata(spec: str | Path) -> dict[str, Any]:
    path = Path(spec).expanduser() / QUANTIZED_MARKER
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read quantized checkpoint metadata {str(path)!r}: {err}") from None
    if meta.get("format") != FORMAT:
        raise UsageError(f"{str(path)!r} has format {meta.get('format')!r}; this moequant reads {FORMAT!r}")
    return meta


def load_weights(spec: str | Path) -> dict[str, QuantizedWeight]:
    """The stored codes, scales and zero points by weight address."""
    root = Path(spec).expanduser()
    meta = read_metadata(root)
    tensors = load_file(str(root / QUANTIZED_FILE))
    weights = {}
    for address, info in meta["weights"].items():
        shape, bits = tuple(info["shape"]), info["bits"]
        codes = unpack(tensors[f"{address}.codes"], bits, shape)
        scale = tensors[f"{address}.scale"]
        if info["sym"]:
            zero = torch.full_like(scale, symmetric_zero(bits))
        else:
            zero = unpack(tensors[f"{address}.zero"], bits, tuple(scale.shape)).float()
        weights[address] = QuantizedWeight(codes, scale, zero, bits, info["sym"])
    return weights


@torch.no_grad()
def load_quantized(
    spec: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool | None = None,
) -> nn.Module:
    """The ordinary HF model of a checkpoint, with every quantized weight dequantized in place.

    Remote code is trusted when the checkpoint says its source model needed it (its code
    files were copied in by `save_quantized`), unless the caller decides otherwise.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    root = Path(spec).expanduser()
    meta = read_metadata(root)
    remote = bool(meta.get("trust_remote_code", False)) if trust_remote_code is None else trust_remote_code
    config = AutoConfig.from_pretrained(str(root), trust_remote_code=remote)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=remote)
    fp_state = load_file(str(root / FP_FILE))
    missing, unexpected = model.load_state_dict(fp_state, strict=False)
    targets = model_targets(adapt(model), quantize_router=True)
    weights = load_weights(root)
    unknown = sorted(set(weights) - set(targets))
    if unknown or unexpected:
        raise UsageError(f"checkpoint {str(root)!r} does not match its model config (unknown: {(unknown + unexpected)[:3]})")
    for address, weight in weights.items():
        targets[address].write(weight.dequantize())
    restored = _covered_parameters(model, [targets[a] for a in weights]) | set(meta.get("tied", {}))
    absent = sorted(set(missing) - restored)
    if absent:
        raise UsageError(f"checkpoint {str(root)!r} lacks tensors {absent[:3]}")
    return model.to(device).eval()
