"""Is a checkpoint directory a complete, servable `pack-quantized` model? (`moequant validate`)

What is expected comes from the model itself, not from what the checkpoint claims: a
skeleton of the config on the meta device gives every decoder linear, expert and dense
tensor, and transformers' reverse conversion gives their Hub names and shapes. Each failure
is one `UsageError` naming the tensor; a pass returns the coverage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moequant.errors import UsageError
from moequant.models import adapt
from moequant.models.base import FusedExperts
from moequant.models.config import load_config
from moequant.models.shards import ExpertSplit, revert_names, split_experts_conversions
from moequant.quant.checkpoint import QUANTIZED_MARKER, QUANTIZED_SUFFIXES, expert_split, read_index
from moequant.quant.grid import pack, unpack

PROBE_TOKENS = 8


@dataclass
class Layout:
    """The Hub tensors a model's checkpoint must hold: quantized modules, routing linears, the rest."""

    quantized: dict[str, tuple[int, ...]]
    routing: dict[str, tuple[int, ...]]
    dense: dict[str, tuple[int, ...]]
    layers: int


@dataclass
class Grid:
    bits: int
    groupsize: int
    ignore: list[str]


@dataclass
class Coverage:
    layers: int
    quantized: int
    experts: int
    routing: int
    dense: int
    grid: Grid
    scale_dtype: str
    loaded: bool

    def summary(self) -> str:
        group = "per channel" if self.grid.groupsize == -1 else f"group {self.grid.groupsize}"
        load = "loads with stock transformers, logits finite" if self.loaded else "stock loading not checked"
        return (
            f"{self.layers} layers: {self.quantized} of {self.quantized} decoder linears quantized "
            f"({self.experts} expert, {self.quantized - self.experts} other), 0 left floating point; "
            f"{self.routing} routing linears dense and ignored; {self.dense} other dense tensors; "
            f"W{self.grid.bits} {group}, {self.scale_dtype} scales; {load}"
        )


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def expected_layout(model: nn.Module) -> Layout:
    """The Hub names and shapes of `model` (a meta skeleton is enough), sorted by role."""
    adapter = adapt(model)
    state = model.state_dict(keep_vars=True)
    names, seen = {}, set()
    for name, tensor in state.items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            names[id(tensor)] = name
    quantized, routing, split = set(), set(), set()
    per_expert: dict[str, tuple[int, ...]] = {}
    per_expert_bias: dict[str, tuple[int, ...]] = {}
    prefixes = adapter.layer_prefixes()
    for layer in adapter.layers:
        mlp = layer.mlp
        if layer.is_moe:
            routing |= {names[id(mlp.router.linear_weight)]}
            routing |= {names[id(mlp.shared_gate.weight)]} if mlp.shared_gate is not None else set()
        quantized |= {names[id(linear.weight)] for linear in layer.named_linears().values()} - routing
        if layer.is_moe and isinstance(mlp.experts, FusedExperts):
            bank = mlp.experts
            written = expert_split(model, layer, prefixes[layer.index])
            if written is None:
                quantized |= {names[id(p)] for p in bank.parameters()}
                continue
            stem = f"{prefixes[layer.index]}.{written.experts}"
            split |= {name for name in names.values() if name.startswith(f"{stem}.") and "." not in name[len(stem) + 1:]}
            for proj in ("gate", "up", "down"):
                weights, bias = bank.weights(proj), bank.bias(proj)
                for expert in range(bank.num_experts):
                    per_expert[f"{stem}.{expert}.{proj}_proj"] = tuple(weights.shape[1:])
                    if bias is not None:
                        per_expert_bias[f"{stem}.{expert}.{proj}_proj.bias"] = tuple(bias.shape[1:])
    kept = {name: state[name].detach() for name in names.values()}
    dense = {k: v for k, v in kept.items() if k not in quantized | routing | split}
    as_hub = revert_names(model, {k: kept[k] for k in quantized})
    return Layout(
        quantized={**{name.removesuffix(".weight"): tuple(t.shape) for name, t in as_hub.items()}, **per_expert},
        routing=_shapes(revert_names(model, {k: kept[k] for k in routing})),
        dense={**_shapes(revert_names(model, dense)), **per_expert_bias},
        layers=len(adapter.layers),
    )


def read_grid(config: Any) -> Grid:
    """The one weight grid of the config's `quantization_config`, parsed by compressed-tensors."""
    from compressed_tensors.quantization import QuantizationConfig

    raw = getattr(config, "quantization_config", None)
    raw = raw.to_dict() if hasattr(raw, "to_dict") else raw
    if not isinstance(raw, dict) or raw.get("quant_method") != "compressed-tensors":
        raise UsageError("config.json: no compressed-tensors quantization_config")
    fields = {k: v for k, v in raw.items() if k in QuantizationConfig.model_fields}
    parsed = QuantizationConfig.model_validate(fields)
    if parsed.format != "pack-quantized" or len(parsed.config_groups) != 1:
        raise UsageError(f"config.json: expected one pack-quantized group, got format {parsed.format!r} "
                         f"with {len(parsed.config_groups)} groups")
    weights = next(iter(parsed.config_groups.values())).weights
    if weights is None or weights.type != "int" or not weights.symmetric:
        raise UsageError("config.json: the quantization group is not a symmetric integer weight grid")
    return Grid(weights.num_bits, weights.group_size if weights.strategy == "group" else -1, list(parsed.ignore or []))


class _Tensors:
    """Reads checkpoint tensors through the index, one shard handle at a time."""

    def __init__(self, root: Path, weight_map: dict[str, str]) -> None:
        self.root, self.weight_map, self.handles = root, weight_map, {}

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        shard = self.weight_map[name]
        if shard not in self.handles:
            self.handles[shard] = safe_open(str(self.root / shard), framework="pt")
        return self.handles[shard].get_tensor(name)


def _check_quantized(tensors: _Tensors, module: str, shape: tuple[int, ...], grid: Grid) -> str:
    """One quantized module's packed codes, scales and shape; returns its scale dtype."""
    if f"{module}.weight" in tensors:
        raise UsageError(f"{module}.weight: left floating point, expected {module}.weight_packed")
    for suffix in QUANTIZED_SUFFIXES:
        if f"{module}.{suffix}" not in tensors:
            raise UsageError(f"{module}.{suffix}: missing from the checkpoint")
    stored = tuple(int(n) for n in tensors[f"{module}.weight_shape"].tolist())
    if stored != shape:
        raise UsageError(f"{module}.weight_shape: {list(stored)}, the config makes it {list(shape)}")
    out, cols = shape
    packed = tensors[f"{module}.weight_packed"]
    width = math.ceil(cols * grid.bits / 32)
    if packed.dtype != torch.int32 or tuple(packed.shape) != (out, width):
        raise UsageError(f"{module}.weight_packed: {packed.dtype} {list(packed.shape)}, expected int32 [{out}, {width}]")
    scale = tensors[f"{module}.weight_scale"]
    groups = 1 if grid.groupsize == -1 else cols // grid.groupsize
    if tuple(scale.shape) != (out, groups):
        raise UsageError(f"{module}.weight_scale: shape {list(scale.shape)}, expected [{out}, {groups}]")
    if not bool((torch.isfinite(scale) & (scale > 0)).all()):
        raise UsageError(f"{module}.weight_scale: scales must be finite and > 0")
    codes = unpack(packed, grid.bits, shape)
    if not torch.equal(pack(codes, grid.bits), packed):
        raise UsageError(f"{module}.weight_packed: bits outside the {grid.bits}-bit codes of a {list(shape)} weight")
    if bool((codes == 1 << (grid.bits - 1)).all()):
        raise UsageError(f"{module}.weight_packed: every code is zero")
    return str(scale.dtype).removeprefix("torch.")


def _check_loads(root: Path, trust_remote_code: bool, vocab: int, model_type: str, splits: list[ExpertSplit]) -> None:
    from transformers import AutoModelForCausalLM

    try:
        with split_experts_conversions(model_type, splits):
            model, info = AutoModelForCausalLM.from_pretrained(
                str(root), trust_remote_code=trust_remote_code, output_loading_info=True
            )
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise UsageError(f"stock transformers cannot load {str(root)!r}: {str(err).strip().splitlines()[0]}") from None
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(kind):
            raise UsageError(f"{sorted(info[kind])[0]}: stock transformers reports it among {kind.replace('_', ' ')}")
    ids = torch.arange(PROBE_TOKENS).remainder(vocab)[None]
    with torch.no_grad():
        logits = model(ids).logits
    if not bool(torch.isfinite(logits).all()):
        raise UsageError(f"stock transformers loads {str(root)!r} but its logits are not finite")


def validate_checkpoint(spec: str | Path, trust_remote_code: bool | None = None, load: bool = True) -> Coverage:
    """Check the checkpoint at `spec`; raises `UsageError` naming the first bad tensor."""
    from transformers import AutoModelForCausalLM

    root = Path(spec).expanduser()
    if not (root / "config.json").is_file():
        raise UsageError(f"{str(root / 'config.json')!r} does not exist; not a checkpoint directory")
    marker = root / QUANTIZED_MARKER
    meta = json.loads(marker.read_text()) if marker.is_file() else {}
    if trust_remote_code is None:
        trust_remote_code = bool(meta.get("trust_remote_code"))
    config = load_config(str(root), trust_remote_code=trust_remote_code)
    grid = read_grid(config)
    tensors = _Tensors(root, read_index(root))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    layout = expected_layout(skeleton)
    scale_dtypes = {_check_quantized(tensors, module, shape, grid) for module, shape in sorted(layout.quantized.items())}
    for name, shape in sorted({**layout.routing, **layout.dense}.items()):
        if name not in tensors:
            raise UsageError(f"{name}: missing from the checkpoint")
        if tuple(tensors[name].shape) != shape:
            raise UsageError(f"{name}: shape {list(tensors[name].shape)}, the config makes it {list(shape)}")
    from compressed_tensors.utils.match import match_name

    for name in sorted(layout.routing):
        module = name.removesuffix(".weight")
        if not any(match_name(module, target) for target in grid.ignore):
            raise UsageError(f"{module}: a routing linear stored dense but not in quantization_config.ignore")
    known = set(layout.routing) | set(layout.dense)
    known |= {f"{module}.{suffix}" for module in layout.quantized for suffix in QUANTIZED_SUFFIXES}
    extra = sorted(set(tensors.weight_map) - known)
    if extra:
        raise UsageError(f"{extra[0]}: not a tensor of the model the config describes")
    if load:
        splits = [ExpertSplit(**split) for split in meta.get("expert_splits", [])]
        _check_loads(root, trust_remote_code, int(config.vocab_size), str(config.model_type), splits)
    return Coverage(
        layers=layout.layers,
        quantized=len(layout.quantized),
        experts=sum(".experts." in module for module in layout.quantized),
        routing=len(layout.routing),
        dense=len(layout.dense),
        grid=grid,
        scale_dtype=",".join(sorted(scale_dtypes)),
        loaded=load,
    )
