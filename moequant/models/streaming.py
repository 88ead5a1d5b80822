"""Decoder layers that live on disk and come into host memory one at a time.

A model larger than host memory is built with its decoder layers on the meta device and an
index from every layer tensor (under the model's own names) to where it lies on disk. That
index is what transformers' own loader produces when it offloads layers to disk: it applies
every family's conversion (per-expert Hub tensors fused into [E, 2I, H], renamed routers,
float32-kept modules), re-saving a converted tensor to the offload folder and pointing at
the original shard for the rest, so no family's checkpoint layout is re-implemented here.

Tensors are put in place with `torch.utils.swap_tensors`, which keeps each Parameter's
identity: the adapter's views (a router's weight, an experts bank) stay valid across
`load` and `release`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from moequant.errors import UsageError

TensorReader = Callable[[str], torch.Tensor]


def _tensors(module: nn.Module) -> list[tuple[str, torch.Tensor, bool]]:
    """(name under `module`, tensor, is parameter) for every parameter and buffer, non-persistent buffers included."""
    found = []
    for owner_name, owner in module.named_modules():
        prefix = f"{owner_name}." if owner_name else ""
        found += [(prefix + a, t, True) for a, t in owner._parameters.items() if t is not None]
        found += [(prefix + a, t, False) for a, t in owner._buffers.items() if t is not None]
    return found


class OffloadedLayers:
    """Load and release the decoder layers of a model whose layers are on the meta device.

    `read(name)` returns the tensor a full parameter name holds on disk; `names` lists the
    names the index has, so a tensor the model expects but the shards lack fails in one line
    naming the tensor and where it was looked for.
    """

    def __init__(self, prefixes: dict[int, str], names: set[str], read: TensorReader, where: str) -> None:
        self.prefixes, self.names, self.read, self.where = prefixes, names, read, where
        self.resident: set[int] = set()

    def load(self, index: int, module: nn.Module, device: torch.device | str = "cpu") -> None:
        """Put layer `index`'s tensors from disk into `module` (its decoder layer) on `device`."""
        prefix = self.prefixes[index]
        for name, tensor, is_param in _tensors(module):
            if tensor.device.type != "meta":
                continue
            full = f"{prefix}.{name}"
            if full not in self.names:
                raise UsageError(f"tensor {full!r} of the model is missing from the weight files in {self.where!r}")
            value = self.read(full).to(device=device, dtype=tensor.dtype)
            if tuple(value.shape) != tuple(tensor.shape):
                raise UsageError(
                    f"tensor {full!r} in {self.where!r} has shape {list(value.shape)}, the model expects {list(tensor.shape)}"
                )
            torch.utils.swap_tensors(tensor, nn.Parameter(value, requires_grad=False) if is_param else value)
        self.resident.add(index)

    def release(self, index: int, module: nn.Module) -> None:
        """Drop layer `index`'s tensors back to the meta device, freeing their memory."""
        for _name, tensor, is_param in _tensors(module):
            if tensor.device.type == "meta":
                continue
            empty = torch.empty_like(tensor, device="meta")
            torch.utils.swap_tensors(tensor, nn.Parameter(empty, requires_grad=False) if is_param else empty)
        self.resident.discard(index)


def detach_from_files(model: nn.Module) -> None:
    """Copy every resident tensor into memory of its own.

    transformers hands out tensors that view the memory-mapped source shards; one such view
    (the embeddings) keeps the whole mapping alive, and with it every page that converting
    the experts touched: resident memory that grows with depth although no tensor holds it.
    """
    seen: set[int] = set()
    for _name, tensor, is_param in _tensors(model):
        if tensor.device.type == "meta" or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        copy = tensor.detach().clone()
        torch.utils.swap_tensors(tensor, nn.Parameter(copy, requires_grad=tensor.requires_grad) if is_param else copy)


def offload_index_reader(model: nn.Module) -> tuple[set[str], TensorReader]:
    """The offload index that transformers' disk offload attached to `model`, with its hooks removed.

    The hooks would reload the original weights on every forward, undoing the in-place
    quantization; the index they carry is all the stages need.
    """
    from accelerate.hooks import remove_hook_from_module

    loader = None
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        weights = getattr(hook, "weights_map", None)
        if weights is not None:
            loader = weights.dataset
            break
    remove_hook_from_module(model, recurse=True)
    if loader is None:
        raise UsageError("no decoder layer was offloaded to disk; nothing to stream")
    return set(loader.all_keys), loader.__getitem__


def offload_device_map(model: nn.Module, layer_prefixes: list[str], device: str = "cpu") -> dict[str, str]:
    """Every decoder layer on disk, every other top-level module on `device`."""
    layers = set(layer_prefixes)
    placed: dict[str, str] = {prefix: "disk" for prefix in layer_prefixes}
    parents = {prefix.rpartition(".")[0] for prefix in layer_prefixes}
    for name, module in model.named_modules():
        if not name or name in layers or any(name.startswith(f"{p}.") for p in layers):
            continue
        if name in parents or any(p.startswith(f"{name}.") for p in parents):
            continue
        if not any(name.startswith(f"{k}.") for k in placed):
            placed[name] = device
    return placed


def offload_folder(out: Path) -> Path:
    return out.with_name(f"{out.name}.offload")
