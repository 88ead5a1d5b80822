"""Quantized checkpoints in compressed-tensors `pack-quantized`: what vLLM serves and stock
transformers loads, and what moequant itself evaluates.

Layout of a checkpoint directory:
- `model-0000k-of-N.safetensors` + `model.safetensors.index.json`: shard 1 holds what lies
  outside the decoder layers (embeddings, final norm, lm_head), shard k + 1 decoder layer k,
  so writing never holds more than one layer's tensors beyond the model itself;
- under the model's original Hub names (transformers' own reverse conversion, the one
  `save_pretrained` applies, splits fused experts into one tensor per expert), every quantized
  Linear X as `X.weight_packed` (int32), `X.weight_scale` (the scale dtype) and
  `X.weight_shape`; every other tensor dense in its own dtype (routers and shared-expert
  gates, dequantized when the method quantized them, norms, biases, embeddings, lm_head;
  transformers keeps DeepSeek's router in float32 whatever the model dtype);
- `config.json` with `quantization_config` (built by compressed-tensors), tokenizer files and
  remote code files;
- `quantization.json`: method, grid, calibration, source, which servers can run it; its
  presence marks the directory as a moequant checkpoint;
- `report.csv`: one row per quantized linear or expert.
The dequantized weights are exactly the in-memory quantized model's (`grid.dequantize`
rounds like compressed-tensors), so the loaded model equals it bit for bit.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import moequant
from moequant.artifacts import atomic_dir, write_json
from moequant.errors import UsageError
from moequant.models import DecoderLayer, MoEBlock, adapt
from moequant.models.base import FusedExperts
from moequant.models.shards import (
    ExpertSplit,
    ShardWriter,
    layer_state,
    outside_layers,
    revert_names,
    save_config,
    split_experts_conversions,
)
from moequant.models.streaming import OffloadedLayers
from moequant.models.files import INDEX_FILE, read_weight_map
from moequant.quant.grid import QuantizedWeight, pack
from moequant.quant.report import PackedWeight, QuantResult, write_report
from moequant.quant.targets import LayerTargets, Target

FORMAT = "compressed-tensors/pack-quantized"
REPORT_FILE = "report.csv"
VLLM_MOE_BITS = (4, 8)
"""vLLM's fused MoE kernels take W4A16 and W8A16 only; other widths load in transformers."""
QUANTIZED_SUFFIXES = ("weight_packed", "weight_scale", "weight_shape")
QUANTIZED_MARKER = "quantization.json"
"""Its presence is what makes a directory a moequant quantized checkpoint."""


def is_quantized_checkpoint(spec: str | Path) -> bool:
    return (Path(spec).expanduser() / QUANTIZED_MARKER).is_file()


def _span(tensor: torch.Tensor) -> tuple[int, int]:
    start = tensor.data_ptr()
    return start, start + tensor.numel() * tensor.element_size()


def expert_split(model: nn.Module, layer: DecoderLayer, prefix: str) -> ExpertSplit | None:
    """How `layer`'s experts are written when its Hub format keeps a fused bank fused (see `ExpertSplit`)."""
    mlp = layer.mlp
    if not isinstance(mlp, MoEBlock) or not isinstance(mlp.experts, FusedExperts):
        return None
    bank = mlp.experts
    path = next(name for name, module in layer.module.named_modules() if module is bank.module)
    hub = revert_names(model, {f"{prefix}.{path}.gate_up_proj": bank.module.gate_up_proj.detach()})
    if all(tensor.dim() == 2 for tensor in hub.values()):
        return None
    return ExpertSplit(path, bank.transposed, bank.interleaved, bank.has_bias)


class _LayerExport:
    """The Hub tensors of one decoder layer: quantized linears packed, everything else dense.

    Which quantized weight a state tensor holds is found by storage address, so fused
    experts, per-expert modules and plain linears need no layout-specific code: the members
    inside a tensor, in memory order, tile it. A bank the Hub keeps fused is the exception:
    it is written one linear per expert (`expert_split`).
    """

    def __init__(self, model: nn.Module, prefix: str, state: dict[str, torch.Tensor], targets: LayerTargets,
                 result: QuantResult, bits: int) -> None:
        self.model, self.result, self.bits, self.prefix, self.layer = model, result, bits, prefix, targets.layer
        self.state = {k: v for k, v in state.items() if k.startswith(f"{prefix}.")}
        self.split = expert_split(model, targets.layer, prefix)
        everything = targets.all()
        self.split_experts = [t for t in everything if t.is_experts] if self.split else []
        if self.split:
            stem = f"{prefix}.{self.split.experts}."
            self.state = {k: v for k, v in self.state.items() if not k.startswith(stem) or "." in k[len(stem):]}
        routing = {t.address for t in targets.routing()}
        self.routing_spans = [_span(v) for t in targets.routing() for v in t.views()]
        split = {t.address for t in self.split_experts}
        self.quantized = [t for t in everything if t.address not in routing | split]
        strided = [t.address for t in self.quantized if not all(v.is_contiguous() for v in t.views())]
        if strided:
            raise UsageError(
                f"{strided[0]} is stored transposed or interleaved; compressed-tensors pack-quantized holds "
                "row-major [out, in] weights, so this family is quantized in memory but not exported"
            )
        absent = [t.address for t in [*self.quantized, *self.split_experts] if t.address not in result.weights]
        if absent:
            raise UsageError(f"{absent[0]} was not quantized; a pack-quantized checkpoint needs every decoder linear")

    def _pieces(self, tensor: torch.Tensor) -> list[tuple[int, Target, int]]:
        start, end = _span(tensor)
        found = [
            (view.data_ptr(), index, member)
            for index, target in enumerate(self.quantized)
            for member, view in enumerate(target.views())
            if start <= view.data_ptr() < end
        ]
        return [(ptr, self.quantized[index], member) for ptr, index, member in sorted(found)]

    def _packed(self, module: str, weight: QuantizedWeight, member: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        code = weight.codes[member]
        return {
            f"{module}.weight_packed": pack(code, self.bits),
            f"{module}.weight_scale": stored_scale(weight.scale[member], dtype, module).contiguous(),
            f"{module}.weight_shape": torch.tensor(code.shape, dtype=torch.int64),
        }

    def _split_tensors(self) -> dict[str, torch.Tensor]:
        """The split bank's experts, one packed linear (and its bias) per expert and projection."""
        assert self.split is not None and isinstance(self.layer.mlp, MoEBlock)
        bank = self.layer.mlp.experts
        out: dict[str, torch.Tensor] = {}
        for target in self.split_experts:
            proj = target.module.removeprefix("experts.")
            weight, views = self.result.weights[target.address].unpacked(), target.views()
            bias = bank.bias(proj)
            for expert, view in enumerate(views):
                module = f"{self.prefix}.{self.split.experts}.{expert}.{proj}_proj"
                out.update(self._packed(module, weight, expert, view.dtype))
                if bias is not None:
                    out[f"{module}.bias"] = bias[expert].detach().cpu().contiguous()
        return out

    def _check_unfused(self, plain: dict[str, torch.Tensor]) -> None:
        """Refuse linears the Hub format fuses into one tensor (lara-mini's `linear_attn.in_proj`).

        transformers splits such a tensor back into its linears before compressed-tensors
        dequantizes it, so the packed codes would be cut apart on load.
        """
        if len(revert_names(self.model, plain)) == len(plain):
            return
        names: dict[str, list[str]] = {}
        for key, code in plain.items():
            for name in revert_names(self.model, {key: code}):
                names.setdefault(name, []).append(key)
        fused = next((name for name, keys in names.items() if len(keys) > 1), None)
        if fused is not None:
            raise UsageError(
                f"{fused.removesuffix('.weight')} fuses several quantized linears in the Hub format; transformers "
                "splits it before compressed-tensors dequantizes it, so this family is quantized in memory but not exported"
            )

    def _check_dense_merges(self, dense: dict[str, torch.Tensor], hub: dict[str, torch.Tensor]) -> None:
        """Refuse unquantized tensors the Hub format splits (bailing-hybrid's q/k/v `conv1d`).

        transformers' compressed-tensors loader puts its dequantization in front of every
        merge the model's conversions do, and that step finds no codes for an unquantized
        tensor, so the merge gets nothing and the load fails. `hub` is `dense` under its Hub
        names; only when it holds more tensors is each key reverted alone to name the culprit.
        """
        if len(hub) == len(dense):
            return
        for key, tensor in dense.items():
            hub = revert_names(self.model, {key: tensor})
            if len(hub) > 1:
                parts = ", ".join(sorted(name.rsplit(".", 2)[-2] for name in hub))
                raise UsageError(
                    f"{key.removesuffix('.weight')} is {len(hub)} tensors in the Hub format ({parts}); transformers' "
                    "compressed-tensors loader merges them through its dequantization, which drops unquantized "
                    "tensors, so this family is quantized in memory but not exported"
                )

    def tensors(self) -> tuple[dict[str, torch.Tensor], list[str]]:
        """(Hub name → tensor, Hub module names of the dense routing linears)."""
        codes, scales, dense, routing = {}, {}, {}, {}
        unpacked: dict[str, QuantizedWeight] = {}
        plain: set[str] = set()
        for key, tensor in self.state.items():
            pieces = self._pieces(tensor)
            if not pieces:
                start, _ = _span(tensor)
                held = routing if any(a <= start < b for a, b in self.routing_spans) else dense
                held[key] = tensor.detach().cpu().contiguous()
                continue
            if sum(target.views()[m].numel() for _, target, m in pieces) != tensor.numel():
                raise UsageError(f"{key} is only partly covered by quantized weights")
            for _, target, _ in pieces:
                if target.address not in unpacked:
                    unpacked[target.address] = self.result.weights[target.address].unpacked()
            if not any(t.is_experts for _, t, _ in pieces):
                plain.add(key)
            rows = tensor.shape[:-1]
            codes[key] = torch.cat([unpacked[t.address].codes[m] for _, t, m in pieces]).reshape(*rows, -1)
            scale = torch.cat([unpacked[t.address].scale[m] for _, t, m in pieces]).reshape(*rows, -1)
            scales[key] = stored_scale(scale, tensor.dtype, key)
        self._check_unfused({key: codes[key] for key in sorted(plain)})
        out: dict[str, torch.Tensor] = {}
        hub_scales = revert_names(self.model, scales)
        for name, code in revert_names(self.model, codes).items():
            if code.dim() != 2:
                raise UsageError(
                    f"{name} keeps its experts fused in the Hub format ({list(code.shape)}); compressed-tensors "
                    "pack-quantized needs one [out, in] linear per expert, so this family is quantized in memory but not exported"
                )
            module = name.removesuffix(".weight")
            out[f"{module}.weight_packed"] = pack(code, self.bits)
            out[f"{module}.weight_scale"] = hub_scales[name].contiguous()
            out[f"{module}.weight_shape"] = torch.tensor(code.shape, dtype=torch.int64)
        hub_routing = revert_names(self.model, routing)
        hub_dense = revert_names(self.model, dense)
        self._check_dense_merges(dense, hub_dense)
        out.update(hub_dense)
        if self.split:
            out.update(self._split_tensors())
        out.update(hub_routing)
        return out, sorted(name.removesuffix(".weight") for name in hub_routing if name.endswith(".weight"))


def stored_scale(scale: torch.Tensor, weight_dtype: torch.dtype, where: str) -> torch.Tensor:
    """`scale` in its weight's dtype, the dtype transformers gives the scale parameter on load.

    transformers casts the stored scale into that parameter, so a scale dtype the weight
    dtype cannot hold exactly would be rounded on load and the served weights would differ.
    """
    if scale.dtype != weight_dtype and weight_dtype != torch.float32:
        raise UsageError(
            f"{where}: {str(scale.dtype).removeprefix('torch.')} scales in a {str(weight_dtype).removeprefix('torch.')} "
            "model would be rounded when transformers loads them; use the model's dtype as scale dtype"
        )
    return scale.to(weight_dtype)


def quantization_config(bits: int, groupsize: int, ignore: list[str]) -> Any:
    """The compressed-tensors config of a symmetric integer weight-only grid (one group for every Linear)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    grouped = groupsize != -1
    weights = QuantizationArgs(
        num_bits=bits,
        type="int",
        symmetric=True,
        strategy="group" if grouped else "channel",
        group_size=groupsize if grouped else None,
        dynamic=False,
    )
    return QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
        format="pack-quantized",
        quantization_status="compressed",
        ignore=ignore,
    )


def _grid_of(weights: dict[str, PackedWeight]) -> tuple[int, int, str]:
    """(bits, groupsize, scale dtype) shared by `weights`; refuses what pack-quantized cannot hold.

    One scale per row is the channel strategy (groupsize −1) whatever the row length.
    """
    for address, weight in weights.items():
        if not weight.sym:
            raise UsageError(
                f"{address} has an asymmetric grid: stock transformers cannot load asymmetric pack-quantized "
                "weights; quantize with a symmetric grid"
            )
    found = list(weights.values())
    if not found:
        raise UsageError("nothing was quantized; there is no checkpoint to write")
    channel = all(w.scale.shape[-1] == 1 for w in found)
    groups = {-1} if channel else {w.shape[-1] // w.scale.shape[-1] for w in found}
    grids = {(w.bits, str(w.scale.dtype).removeprefix("torch.")) for w in found}
    if len(grids) != 1 or len(groups) != 1:
        raise UsageError(f"a checkpoint holds one grid; these weights use {sorted(grids)} with groups {sorted(groups)}")
    (bits, scale_dtype), groupsize = grids.pop(), groups.pop()
    return bits, groupsize, scale_dtype


def servability(bits: int) -> dict[str, Any]:
    vllm = bits in VLLM_MOE_BITS
    return {
        "transformers": True,
        "vllm": vllm,
        "note": "" if vllm else f"W{bits}: vLLM's fused MoE kernels take W4/W8 only; loads with transformers",
    }


class CheckpointWriter:
    """Writes a checkpoint into `directory` one decoder layer at a time, then what lies outside the layers.

    Shard 1 holds the tensors outside the decoder layers and shard k+2 layer k, so a layer can
    be written (and its codes dropped) as soon as it is quantized: a streamed model never holds
    more than one layer's codes, and an in-memory model is written the same way at the end.
    """

    def __init__(self, directory: Path, model: nn.Module) -> None:
        self.directory, self.model = directory, model
        self.adapter = adapt(model)
        self.prefixes = self.adapter.layer_prefixes()
        self.shards = ShardWriter(directory, len(self.prefixes) + 1)
        self.ignore = ["lm_head"]
        self.grid: tuple[int, int, str] | None = None
        self.splits: list[ExpertSplit] = []

    @torch.no_grad()
    def write_layer(self, layer: DecoderLayer, result: QuantResult) -> None:
        """Shard of `layer`, which must hold its dequantized weights; codes and scales come from `result`."""
        prefix = self.prefixes[layer.index]
        grid = _grid_of(result.layer_weights(layer.index))
        if self.grid is not None and grid != self.grid:
            raise UsageError(f"a checkpoint holds one grid; layer {layer.index} uses {grid}, earlier layers {self.grid}")
        self.grid = grid
        state = layer_state(layer.module, prefix)
        export = _LayerExport(self.model, prefix, state, LayerTargets.of(layer, True), result, grid[0])
        tensors, routing = export.tensors()
        self.ignore.extend(routing)
        if export.split and export.split not in self.splits:
            self.splits.append(export.split)
        self.shards.write(layer.index + 2, tensors)

    @torch.no_grad()
    def finish(self, result: QuantResult, metadata: dict[str, Any], tokenizer: Any | None) -> None:
        """Everything but the layers' shards: the outside tensors, config, index, report and marker."""
        from compressed_tensors.compressors import ModelCompressor

        if self.grid is None:
            raise UsageError("nothing was quantized; there is no checkpoint to write")
        bits, groupsize, scale_dtype = self.grid
        outside, tied = outside_layers(self.model, list(self.prefixes.values()))
        self.shards.write(1, outside)
        payload = {
            "format": FORMAT,
            "moequant_version": moequant.__version__,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "trust_remote_code": bool(getattr(self.model.config, "auto_map", None)),
            **metadata,
            "grid": {"bits": bits, "groupsize": groupsize, "sym": True, "scale_dtype": scale_dtype},
            "servable": servability(bits),
            "tied": tied,
            "expert_splits": [split.to_dict() for split in self.splits],
            "summary": result.summary(),
        }
        save_config(self.model, self.directory, tokenizer)
        self.shards.write_index()
        ModelCompressor(quantization_config=quantization_config(bits, groupsize, self.ignore)).update_config(
            str(self.directory)
        )
        write_report(self.directory / REPORT_FILE, result.rows)
        write_json(self.directory / QUANTIZED_MARKER, payload)


class StreamedLayers:
    """The layer store of a streamed model: each layer is read from disk, quantized, written to its shard and freed."""

    def __init__(self, offloaded: OffloadedLayers, writer: CheckpointWriter) -> None:
        self.offloaded, self.writer = offloaded, writer

    def load(self, layer: DecoderLayer) -> None:
        self.offloaded.load(layer.index, layer.module)

    def store(self, layer: DecoderLayer, result: QuantResult) -> None:
        """Write the layer, then drop its tensors and its codes: host memory stays flat in depth."""
        self.writer.write_layer(layer, result)
        self.offloaded.release(layer.index, layer.module)
        for address in result.layer_weights(layer.index):
            del result.weights[address]


def save_quantized(
    out_dir: str | Path,
    model: nn.Module,
    result: QuantResult,
    metadata: dict[str, Any],
    tokenizer: Any | None = None,
) -> Path:
    """Write the checkpoint atomically; `metadata` (method config, calibration, source) goes into quantization.json.

    `model` must hold the dequantized weights (every algorithm writes them back in place):
    dense tensors are taken from it, codes and scales from `result`.
    """
    _grid_of(result.weights)
    with atomic_dir(out_dir) as tmp:
        writer = CheckpointWriter(tmp, model)
        for layer in writer.adapter.layers:
            writer.write_layer(layer, result)
        writer.finish(result, metadata, tokenizer)
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


def read_index(root: Path) -> dict[str, str]:
    """Tensor name → shard file, after checking every shard is complete and holds what the index lists."""
    if not (root / INDEX_FILE).is_file():
        raise UsageError(f"{str(root / INDEX_FILE)!r} is missing; not a sharded checkpoint")
    return read_weight_map(root)


@torch.no_grad()
def load_quantized(
    spec: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool | None = None,
    placed: dict[str, Any] | None = None,
) -> nn.Module:
    """The ordinary HF model of a checkpoint, every quantized weight dequantized at load time.

    `placed` (a `device_map` and its offload folder) spreads the model over several devices
    instead of moving it to `device`.

    Loading goes through stock transformers + compressed-tensors (dequantizing), so what
    moequant evaluates is what `from_pretrained` gives a user. Remote code is trusted when
    the checkpoint says its source model needed it (its code files were copied in by
    `save_quantized`), unless the caller decides otherwise.
    """
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    root = Path(spec).expanduser()
    meta = read_metadata(root)
    read_index(root)
    remote = bool(meta.get("trust_remote_code", False)) if trust_remote_code is None else trust_remote_code
    splits = [ExpertSplit(**split) for split in meta.get("expert_splits", [])]
    model_type = str(json.loads((root / "config.json").read_text(encoding="utf-8")).get("model_type"))
    with warnings.catch_warnings(), split_experts_conversions(model_type, splits):
        warnings.filterwarnings("ignore", message="You passed `quantization_config`")
        model, info = AutoModelForCausalLM.from_pretrained(
            str(root),
            dtype=dtype,
            trust_remote_code=remote,
            quantization_config=CompressedTensorsConfig(dequantize=True),
            output_loading_info=True,
            **(placed or {}),
        )
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(kind):
            raise UsageError(f"checkpoint {str(root)!r} does not match its config: {kind.replace('_', ' ')} {sorted(info[kind])[:3]}")
    for layer in adapt(model).moe_layers:
        for param in layer.mlp.experts.parameters():
            # transformers leaves dequantized fused experts in the stored scales' dtype
            if param.device.type != "meta":
                param.data = param.data.to(dtype)
    return (model if placed else model.to(device)).eval()
